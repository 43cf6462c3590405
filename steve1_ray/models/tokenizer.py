"""CLIP byte-level BPE tokenizer: text prompts -> (B, 77) int64 token rows for MineCLIP's text GPT.

The vocabulary is OpenAI's `bpe_simple_vocab_16e6.txt.gz` (48,894 merges, MIT-licensed, 1.3 MB; see
`CLIP_VOCAB_LICENSE.txt` beside it). It ships inside this package, so a plain `pip install` tokenizes prompts.

Text is cleaned like CLIP (ftfy.fix_text, HTML-unescaped twice, whitespace collapsed, lower-cased),
split with CLIP's regex, mapped to printable unicode byte-by-byte, then BPE-merged. A MineCLIP row
is `[49406] + first 75 ids + [49407]`, zero-padded to 77.
"""
from __future__ import annotations

import gzip
import html
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import ftfy
import numpy as np
import regex
import torch

CONTEXT_LENGTH = 77
SOT_TOKEN = 49406  # <|startoftext|>
EOT_TOKEN = 49407  # <|endoftext|>
VOCAB_SIZE = 49408
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_N_MERGES = 49152 - 256 - 2  # merge lines used by CLIP (after the header line)

# Special tokens, contractions, runs of letters, single digits, runs of other non-space symbols.
_SPLIT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def default_vocab_path() -> Path:
    """Path of the BPE vocab shipped in this package (package data, from a checkout or a wheel alike)."""
    path = Path(__file__).resolve().with_name(VOCAB_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP BPE vocab {path} is missing: the steve1_ray install is incomplete "
                                f"(reinstall it, or pass vocab_path= explicitly)")
    return path


def bytes_to_unicode() -> dict[int, str]:
    """Reversible map of the 256 byte values to printable unicode characters (CLIP/GPT-2 scheme).

    Printable Latin-1 bytes map to themselves; the 68 others (controls, space, ...) map to
    code points 256, 257, ... in byte order. The dict's insertion order is the vocab order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = (b for b in range(256) if b not in table)
    for n, b in enumerate(extra):
        table[b] = chr(256 + n)
    return table


def clean_text(text: str) -> str:
    """ftfy fix, HTML unescape (twice), whitespace collapsed to single spaces, stripped, lower-cased."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class CLIPTokenizer:
    """CLIP BPE: `encode(str) -> list[int]`, `decode(ids) -> str`, `__call__(texts) -> (B, 77) int64`."""

    def __init__(self, vocab_path: str | Path | None = None):
        path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1:_N_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        if len(merges) != _N_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{path}: expected {_N_MERGES} BPE merges of two symbols; is this CLIP's {VOCAB_FILE}?")
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.merge_rank = {pair: i for i, pair in enumerate(merges)}
        # BPE results per pre-token; the special tokens stand for themselves.
        self._cache: dict[str, tuple[str, ...]] = {"<|startoftext|>": ("<|startoftext|>",),
                                                   "<|endoftext|>": ("<|endoftext|>",)}
        assert len(self.encoder) == VOCAB_SIZE and self.encoder["<|endoftext|>"] == EOT_TOKEN

    def bpe(self, token: str) -> tuple[str, ...]:
        """Merge the characters of one pre-token (the last one carries `</w>`) by merge rank."""
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = list(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.merge_rank.get(p, _N_MERGES))
            if best not in self.merge_rank:
                break
            merged, i = [], 0
            while i < len(word):  # merge every occurrence, left to right, without overlaps
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        result = tuple(word)
        if len(self._cache) >= CACHE_SIZE:  # bounded: a stream of unique words must not grow it forever
            for key in list(self._cache)[2:2 + CACHE_SIZE // 4]:  # the oldest quarter (the 2 specials stay)
                del self._cache[key]
        self._cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without start/end tokens."""
        ids: list[int] = []
        for piece in _SPLIT.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[sym] for sym in self.bpe(mapped))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        text = "".join(self.decoder[int(i)] for i in ids)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
        """MineCLIP rows: [SOT] + first (context_length - 2) ids + [EOT], zero-padded. (B, 77) int64."""
        if isinstance(texts, str):
            texts = [texts]
        if not all(isinstance(t, str) for t in texts):
            bad = next(t for t in texts if not isinstance(t, str))
            raise TypeError(f"tokenize expects strings, got {type(bad).__name__}: {bad!r}")
        rows = np.zeros((len(texts), context_length), dtype=np.int64)
        for r, text in enumerate(texts):
            ids = [SOT_TOKEN, *self.encode(text)[:context_length - 2], EOT_TOKEN]
            rows[r, :len(ids)] = ids
        return torch.from_numpy(rows)


CACHE_SIZE = 20_000
"""pre-tokens whose merges the tokenizer remembers (CLIP's vocabulary has 49,408 entries)"""


@lru_cache(maxsize=1)
def get_tokenizer() -> CLIPTokenizer:
    """The process-wide tokenizer with the default vocab (built once, ~0.3 s)."""
    return CLIPTokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """(B, 77) int64 MineCLIP token rows for `texts`."""
    return get_tokenizer()(texts, context_length)
