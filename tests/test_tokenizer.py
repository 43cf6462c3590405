"""CLIP BPE tokenizer: equality with OpenAI's reference tokenizer ids, row layout, errors."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from steve1_ray.models import tokenizer as T


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return json.loads((fixtures_dir / "mineclip" / "clip_token_ids.json").read_text())["prompts"]


def test_matches_committed_reference_ids(golden):
    tok = T.get_tokenizer()
    for case in golden:
        assert tok.encode(case["prompt"]) == case["ids"], case["prompt"]
    rows = T.tokenize([c["prompt"] for c in golden])
    assert rows.dtype == torch.int64 and rows.shape == (len(golden), 77)
    for r, case in zip(rows.tolist(), golden):
        assert r[:len(case["row"])] == case["row"] and not any(r[len(case["row"]):])


def _reference_dir():
    """clip-anytorch's package folder (installed by scripts/setup.sh as a test reference only), not imported."""
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("clip-anytorch (the reference tokenizer) is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def test_the_packaged_vocab_is_clips_own():
    import hashlib

    assert T.default_vocab_path().parent == Path(T.__file__).resolve().parent  # package data, no other package
    ours = hashlib.sha256(T.default_vocab_path().read_bytes()).hexdigest()
    assert ours == hashlib.sha256((_reference_dir() / T.VOCAB_FILE).read_bytes()).hexdigest()


def test_matches_live_reference_tokenizer():
    """The clip-anytorch file itself, loaded by path (its package __init__ is not imported)."""
    ref_file = _reference_dir() / "simple_tokenizer.py"
    spec = importlib.util.spec_from_file_location("_ref_simple_tokenizer", ref_file)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    ref_tok = ref.SimpleTokenizer(str(T.default_vocab_path()))
    prompts = ["open inventory", "Go swimming!", "it's 3 o'clock: 12:45pm", "smelt 10x iron-ore",
               "  TAB\tand   spaces ", "look at the sky " * 30, "ça va? Ελληνικά", "&quot;quoted&quot;"]
    tok = T.get_tokenizer()
    for p in prompts:
        assert tok.encode(p) == ref_tok.encode(p), p
        assert tok.decode(tok.encode(p)).strip() == ref_tok.decode(ref_tok.encode(p)).strip()


def test_row_layout_and_truncation():
    rows = T.tokenize(["chop a tree", "dig " * 200])
    assert rows[0, 0] == T.SOT_TOKEN and (rows[0] == T.EOT_TOKEN).sum() == 1
    eot = int((rows[0] == T.EOT_TOKEN).nonzero())
    assert eot == 4 and (rows[0, eot + 1:] == 0).all()  # chop, a, tree
    assert rows[1, 76] == T.EOT_TOKEN and rows[1].argmax() == 76 and (rows[1, 1:76] != 0).all()
    assert T.tokenize("") .tolist()[0][:3] == [T.SOT_TOKEN, T.EOT_TOKEN, 0]
    assert T.tokenize("one").shape == (1, 77)


def test_bad_inputs(tmp_path):
    with pytest.raises(TypeError, match="strings"):
        T.tokenize(["ok", 3])
    with pytest.raises(FileNotFoundError):
        T.CLIPTokenizer(tmp_path / "missing.txt.gz")


def test_missing_vocab_says_the_install_is_incomplete(monkeypatch, tmp_path):
    monkeypatch.setattr(T, "__file__", str(tmp_path / "tokenizer.py"))
    with pytest.raises(FileNotFoundError, match="install is incomplete"):
        T.default_vocab_path()
