"""Train a MineCLIP-architecture video–text embedder on captioned recordings (a world's own goal space).

STEVE-1's goals live in MineCLIP's joint video–text space. The released MineCLIP knows Minecraft, not the
embedded world, so this job trains the same architecture (any size; `MineCLIPConfig`) on 16-frame clips cut
from recordings, each paired with the caption of the goal segment it comes from, with MineCLIP's symmetric
InfoNCE and its learned temperature (`clip_model.logit_scale`). The checkpoint is written in MineCLIP's
`attn.pth` layout plus the config, so `load_mineclip(path)` (and the dataset, prior, serving and evaluation
jobs) read it unchanged.

    steve1 train-embedder recordings=data/world out=runs/embedder
    python jobs/train_embedder.py recordings=data/world out=runs/embedder mineclip.embed_dim=768

Clips. A goal segment covers recording frames [start, end); frame `end` is the first one that shows the goal
reached (the inventory count, the placed table). A clip is a window of 16 frames ending (inclusively) at a
frame in (start, end], exactly as a STEVE-1 goal embedding is the window t-15..t: the first clip of every
segment ends on frame `end`, the others at random earlier frames of the segment.

Speed. Per-frame ViT work dominates. A batch is built from whole segments (all clips of a few segments), and
every distinct frame of the batch goes through the ViT once; the clips then index into those features
(`encode_clip_batch`). Clips of one segment overlap, so this is ~2-3x fewer ViT frames than one pass per clip,
and the same for validation (each held-out frame is encoded once).

Positives: several captions are paraphrases of one goal ("chop a tree", "collect wood"), and a batch holds many
clips of the same goal, so the InfoNCE targets are spread uniformly over every pair with the same goal label
(multi-positive InfoNCE); with all-distinct labels it is exactly CLIP's loss. The temperature has its own
learning rate (`logit_scale_lr`): at the model's lr it would barely move in a few hundred steps.

Paraphrases: each epoch a `paraphrases` share of the training clips is paired with a random template phrasing of
its goal (`steve1_ray.world.phrases`) instead of its caption, so the text side learns more than the
demonstrators' few captions.

Validation (episodes held out): text→clip retrieval R@1 / R@5 — for each held-out clip's caption, are the
top-k clips of the same goal? — and clip→goal accuracy over the goals' captions, each with its chance level;
`val/end_clip_to_goal_acc` is the same on the clips that end on the goal-reached frame (and
`val/end_clip_to_goal_acc/<goal>` per goal: the share of that goal's end clips recognised). `val/heldout_phrase/*`
scores phrasings that no template produces (`phrases.HELDOUT`) beside the captions (`val/caption/*`).
Each epoch also prints a progress line with the ETA, also written to <out>/progress.log (relayed from Ray
Train's rank 0 to the driver).
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import yaml
import torch.nn.functional as F

from steve1_ray.cluster import check_workers_fit, connect
from steve1_ray.config import check, save_config, to_dict
from steve1_ray.models.mineclip import MineCLIP, MineCLIPConfig, load_mineclip, save_mineclip
from steve1_ray.progress import duration
from steve1_ray.runner import Job, run_job


@dataclass
class EmbedderConfig:
    """Options of the embedder training job."""

    recordings: str = "data/world"
    """root written by `steve1 record` (holds captions.jsonl and the contractor/ videos)"""
    captions: str = ""
    """captions file; default <recordings>/captions.jsonl"""
    out: str = "runs/embedder"
    """output folder: mineclip.pth (attn.pth layout), metrics.json, config.yaml"""
    preset: str = "world"
    """architecture: `world` (below, for the embedded world on a CPU) or a MineCLIPConfig preset (`attn` = the
    released size, `debug`)"""
    mineclip: dict = field(default_factory=dict)
    """overrides of MineCLIPConfig fields on top of the preset, e.g. {embed_dim: 768, vision_layers: 4}"""
    init: str = ""
    """optional MineCLIP checkpoint to start from (e.g. the released attn.pth to fine-tune)"""
    clips_per_segment: int = 2
    """clips cut from each caption segment: the one ending on the goal-reached frame, the rest at random"""
    end_window: int = 8
    """the extra clips of a segment end within its last `end_window` frames (0: anywhere in the segment). Near
    the goal-reached frame a clip shows the goal (the tree being chopped, the water being drunk); early in a
    long segment it shows walking on grass, the same for every goal. With `only_successful` this took held-out
    R@1 from 0.21 to 0.46 on 100 recorded episodes (benchmarks/results/embedder.md)"""
    min_segment_frames: int = 1
    """segments with fewer frames are skipped (quick goals such as placing a table take 1-3 frames)"""
    only_successful: bool = True
    """keep only segments whose goal was achieved"""
    max_clips: int = 5000
    """clips kept at most (beyond it, a random share of every episode's segments)"""
    val_fraction: float = 0.2
    """fraction of episodes held out for validation (the reported retrieval numbers)"""
    select_fraction: float = 0.1
    """fraction of episodes held out to pick the best epoch (the checkpoint written is the epoch with the highest
    R@1 + R@5 + clip→goal accuracy on them; the metrics peak early on small sets). These episodes are neither
    trained on nor part of the validation numbers, which stay unbiased. 0 (or fewer than 5 training episodes):
    keep the last epoch"""
    epochs: int = 12
    """passes over the training clips (with select episodes, the best epoch is kept)"""
    batch_size: int = 32
    """clips per step (whole segments are added until the batch holds at least this many)"""
    lr: float = 1e-3
    """peak learning rate (AdamW, warmup then cosine to 0) of the video tower and pooling; text tower:
    lr * text_lr_scale"""
    logit_scale_lr: float = 0.02
    """learning rate of the learned temperature (log scale), on the same warmup/cosine schedule"""
    text_lr_scale: float = 0.1
    """text tower lr = lr * this. At init the video embeddings of all clips are nearly parallel (the ViT's CLS
    token averages small local details away); a text tower as fast as the video one then collapses onto that
    common direction (loss stuck at log(batch)). A slower text tower keeps the captions apart and makes the
    video tower learn the differences."""
    center_init: bool = False
    """zero-mean video and text embeddings at init (see `center_init`). Measured on crafter: the mean pairwise
    cosine of clip embeddings drops from 0.96 to 0.29 at init, but returns to 0.86 within 5 steps even at lr 1e-4
    (the content part is tiny in magnitude), so it does not prevent the collapse; off by default"""
    weight_decay: float = 0.05
    """AdamW weight decay on weight matrices (not on biases, norms, embeddings or the temperature)"""
    warmup_steps: int = 10
    """optimizer steps of linear lr warmup before the cosine decay"""
    paraphrases: float = 0.5
    """share of training clips whose text, each epoch, is a random template paraphrase of the clip's goal
    (`steve1_ray.world.phrases.template_phrases`: verb/object/frame templates, ~5800 phrasings of the 18 goals)
    instead of its recorded caption; drawn from `seed` and the epoch, so a run is reproducible. 0: the captions
    only (the behaviour before paraphrases). Clips of goals without templates keep their caption"""
    seed: int = 0
    """seed of the clip choice, the episode splits, the initial weights and the batch order"""
    num_workers: int = 0
    """Ray Train workers; 0 trains in this process (Ray not needed)"""
    use_gpu: bool = False
    """train on CUDA when available; with num_workers > 0 each Ray Train worker gets one GPU"""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves for each Ray Train worker (num_workers > 0)"""
    storage_path: str = ""
    """Ray Train storage (local dir or s3://); default <out>/ray"""

    def __post_init__(self):
        check(self.clips_per_segment >= 1, f"clips_per_segment={self.clips_per_segment!r} must be >= 1")
        check(self.end_window >= 0, f"end_window={self.end_window!r} must be >= 0 (0: anywhere in the segment)")
        check(self.min_segment_frames >= 1, f"min_segment_frames={self.min_segment_frames!r} must be >= 1")
        check(0.0 <= self.val_fraction < 1.0, f"val_fraction={self.val_fraction!r} must be in [0, 1)")
        check(0.0 <= self.select_fraction and self.val_fraction + self.select_fraction < 1.0,
              f"select_fraction={self.select_fraction!r}: must be >= 0 with val_fraction + select_fraction < 1")
        check(self.epochs >= 1 and self.batch_size >= 2,
              f"epochs={self.epochs!r} must be >= 1 and batch_size={self.batch_size!r} >= 2 (InfoNCE needs negatives)")
        check(self.lr > 0 and self.logit_scale_lr >= 0,
              f"lr={self.lr!r} must be > 0 and logit_scale_lr={self.logit_scale_lr!r} >= 0")
        check(self.max_clips >= 2, f"max_clips={self.max_clips!r} must be >= 2")
        check(0.0 <= self.paraphrases <= 1.0,
              f"paraphrases={self.paraphrases!r} must be in [0, 1] (share of clips trained on a template paraphrase)")
        check(self.num_workers >= 0, f"num_workers={self.num_workers!r} must be >= 0")
        check(self.cpus_per_worker > 0, f"cpus_per_worker={self.cpus_per_worker!r} must be > 0")
        check(isinstance(self.mineclip, dict), f"mineclip={self.mineclip!r} must be a mapping of MineCLIPConfig fields")
        # `mineclip.embed_dim=768` on the command line arrives as a string: parse it as YAML like other values
        self.mineclip = {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in self.mineclip.items()}
        if not self.init:
            try:
                self.model_config()
            except (TypeError, ValueError) as e:
                check(False, f"preset={self.preset!r} mineclip={self.mineclip!r}: {e} "
                             f"(fields: see steve1_ray.models.mineclip.MineCLIPConfig)")

    def model_config(self) -> MineCLIPConfig:
        base, sizes = WORLD_PRESETS.get(self.preset, (self.preset, {}))
        return MineCLIPConfig.preset(base, **{**sizes, **self.mineclip})


WORLD_PRESETS = {
    # MineCLIP's `debug` size and 128-d goals (at 512-d the temporal encoder would cost as much as the ViT). The
    # ViT sees a 112x128 crop of each 160x256 frame in 16-px patches, one crafter tile each (7x8 tokens): the
    # player's neighbourhood (it is drawn at rows 71-89, columns 128-144) and the middle of the inventory row.
    # The whole frame in 32-px patches (2x2 tiles) costs about as much and was no better (benchmarks/results/
    # embedder.md): what the player is doing is in the tiles next to it, not in the landscape.
    # The temporal encoder also sees frame-to-frame feature differences (`temporal_delta`): what a clip did is
    # in what changed (held-out R@1 0.74 vs 0.3-0.4 after 3 epochs on 100 episodes, benchmarks/results/embedder.md).
    "world": ("debug", {"patch_size": 16, "crop": (48, 64, 112, 128), "embed_dim": 128, "temporal_heads": 4,
                        "temporal_dim_head": 32, "temporal_delta": True}),
}


# --------------------------------------------------------------------------------------------------
# Clips


@dataclass
class ClipSet:
    """Clips as indices into one array of distinct frames (overlapping clips share their frames)."""

    frames: np.ndarray  # (U, 160, 256, 3) uint8 RGB, every frame used by some clip, once
    index: np.ndarray  # (M, L) int64 rows of `frames` making each clip, oldest first
    texts: list[str]  # caption of each clip
    goals: list[str]  # goal label of each clip (positives share it)
    episodes: list[str]
    segments: np.ndarray  # (M,) int64 segment id of each clip (batches are built from whole segments)
    is_end: np.ndarray  # (M,) bool: the clip ends on the segment's goal-reached frame

    def __len__(self) -> int:
        return len(self.texts)

    def clips(self, idx) -> np.ndarray:
        """(B, L, 160, 256, 3) uint8 frames of clips `idx`."""
        return self.frames[self.index[np.asarray(idx)]]

    def subset(self, idx) -> "ClipSet":
        idx = np.asarray(list(idx), dtype=np.int64)
        used, inverse = np.unique(self.index[idx], return_inverse=True)
        return ClipSet(self.frames[used], inverse.reshape(len(idx), -1), [self.texts[i] for i in idx],
                       [self.goals[i] for i in idx], [self.episodes[i] for i in idx], self.segments[idx],
                       self.is_end[idx])


def read_captions(path: str | Path) -> list[dict]:
    """captions.jsonl: one line per goal segment {episode, video, actions, start, end, goal, text, ...}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: record captioned episodes first "
                                f"(steve1 record out=<dir>), or set captions=<file>")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e})") from None
        missing = {"episode", "start", "end", "text"} - set(row)
        if missing:
            raise ValueError(f"{path}:{n}: caption line lacks {sorted(missing)}")
        rows.append(row)
    return rows


def build_clips(cfg: EmbedderConfig, window: int, log=None) -> ClipSet:
    """Cut `window`-frame MineCLIP clips (160x256, cursor and null-dropping as the dataset job) per segment."""
    from steve1_ray.data import load_contractor_episode

    root = Path(cfg.recordings)
    rows = read_captions(cfg.captions or root / "captions.jsonl")
    by_episode: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("success") or not cfg.only_successful:
            by_episode.setdefault(r["episode"], []).append(r)
    rng = np.random.default_rng(cfg.seed)
    n_rows = sum(len(v) for v in by_episode.values())
    # more segments than max_clips allows: keep a random share of every episode's segments (not the first
    # episodes only, which would drop most of the recorded worlds)
    keep_p = min(1.0, 1.1 * cfg.max_clips / max(1, n_rows * cfg.clips_per_segment))
    keep_rng = np.random.default_rng([cfg.seed, 17])
    frames: list[np.ndarray] = []
    index, texts, goals, episodes, segments, is_end = [], [], [], [], [], []
    n_frames, n_seg, skipped = 0, 0, []
    for name in sorted(by_episode):
        segs = by_episode[name]
        if keep_p < 1.0:
            segs = [s for s in segs if keep_rng.random() < keep_p] or segs[:1]
        video = root / segs[0].get("video", f"contractor/{name}.mp4")
        actions = root / segs[0].get("actions", f"contractor/{name}.jsonl")
        try:
            ep = load_contractor_episode(video, actions, max_frame_mismatch=2)
        except (OSError, ValueError) as e:  # one bad recording must not stop the job
            skipped.append(f"{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        kept = np.asarray(ep.meta["kept_lines"])  # recording frame index of each kept frame
        n = len(kept)
        ends_of_episode = []
        for s in segs:
            # kept frames lo..hi: lo the segment's first, hi its goal-reached frame (`end`, or the last frame).
            lo, hi = int(np.searchsorted(kept, s["start"])), min(int(np.searchsorted(kept, s["end"])), n - 1)
            if hi - lo < cfg.min_segment_frames or hi < window - 1:
                continue
            first = max(lo + 1, window - 1, hi - cfg.end_window if cfg.end_window else 0)
            candidates = np.arange(first, hi)
            ends = [hi] + [int(x) for x in rng.permutation(candidates)[:cfg.clips_per_segment - 1]]
            for last in sorted(ends):
                ends_of_episode.append(last)
                texts.append(s["text"])
                goals.append(s.get("goal") or s["text"])
                episodes.append(name)
                segments.append(n_seg)
                is_end.append(last == hi)
            n_seg += 1
        if not ends_of_episode:
            continue
        ends_arr = np.asarray(ends_of_episode)
        rows_ = ends_arr[:, None] + np.arange(1 - window, 1)[None, :]  # (m, L) kept-frame indices
        used, inverse = np.unique(rows_, return_inverse=True)
        frames.append(ep.frames_mineclip[used])
        index.append(inverse.reshape(rows_.shape) + n_frames)
        n_frames += len(used)
        if len(texts) >= cfg.max_clips:
            break
    if skipped and log:
        log(f"embedder: skipped {len(skipped)} unreadable episode(s): {'; '.join(skipped[:3])}")
    if not texts:
        raise ValueError(f"no clips: {cfg.recordings} has no caption segment of >= {cfg.min_segment_frames} frames "
                         f"ending after frame {window - 1} (record longer episodes, or lower min_segment_frames)"
                         + (f"; unreadable: {skipped[:3]}" if skipped else ""))
    m = min(len(texts), cfg.max_clips)
    data = ClipSet(np.concatenate(frames), np.concatenate(index), texts, goals, episodes,
                   np.asarray(segments, dtype=np.int64), np.asarray(is_end, dtype=bool))
    return data if m == len(data) else data.subset(range(m))


def split_by_episode(data: ClipSet, val_fraction: float, seed: int) -> tuple[ClipSet, ClipSet]:
    names = sorted(set(data.episodes))
    rng = np.random.default_rng(seed)
    rng.shuffle(names)
    n_val = int(round(len(names) * val_fraction)) if len(names) > 1 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 and len(names) > 1 else 0), len(names) - 1)
    val_names = set(names[:n_val])
    tr = [i for i, e in enumerate(data.episodes) if e not in val_names]
    va = [i for i, e in enumerate(data.episodes) if e in val_names]
    return data.subset(tr), data.subset(va)


def split_train_val_select(data: ClipSet, cfg: "EmbedderConfig") -> tuple[ClipSet, ClipSet, ClipSet | None]:
    """Episodes -> (train, val, select): val for the reported metrics, select (optional) to pick the epoch."""
    train, val = split_by_episode(data, cfg.val_fraction, cfg.seed)
    if cfg.select_fraction <= 0 or len(set(train.episodes)) < 5:  # too few episodes to spare one
        return train, val, None
    train, select = split_by_episode(train, cfg.select_fraction / (1.0 - cfg.val_fraction), cfg.seed + 1)
    return train, val, select


def selection_score(metrics: dict) -> float:
    """What picks the best epoch on the selection episodes."""
    return sum(float(metrics.get(k, 0.0)) for k in ("text_to_clip_r@1", "text_to_clip_r@5", "clip_to_goal_acc"))


def segment_batches(data: ClipSet, batch_size: int, seed: int) -> list[np.ndarray]:
    """One epoch of batches of whole segments, each batch holding segments of as many different goals as it can.

    Segments come in random order; each goes to the first open batch without its goal (a batch is closed at
    >= batch_size clips). InfoNCE learns from negatives: batches of consecutive segments held 3-5 goals in 16
    clips on the recorded world (collect_wood alone is a quarter of all segments), and the model collapsed."""
    if len(data) == 0:
        return []
    by_segment = np.argsort(data.segments, kind="stable")
    members = np.split(by_segment, np.flatnonzero(np.diff(data.segments[by_segment])) + 1)
    goals = [data.goals[m[0]] for m in members]
    open_: list[tuple[list[int], set]] = []
    batches = []
    for k in np.random.default_rng(seed).permutation(len(members)):
        slot = next((b for b in open_ if goals[k] not in b[1]), None)
        if slot is None:
            slot = ([], set())
            open_.append(slot)
        slot[0].extend(members[k].tolist())
        slot[1].add(goals[k])
        if len(slot[0]) >= batch_size:
            batches.append(np.sort(np.asarray(slot[0])))
            open_.remove(slot)
    batches += [np.sort(np.asarray(b[0])) for b in open_ if len(b[0]) >= 2]  # a clip alone has no negatives
    order = np.random.default_rng(seed + 1).permutation(len(batches))
    return [batches[i] for i in order]


# --------------------------------------------------------------------------------------------------
# Loss and metrics


def encode_clips(model: MineCLIP, clips: torch.Tensor) -> torch.Tensor:
    """(B, L, H, W, 3) uint8 -> (B, D) video embeddings, differentiable."""
    b, l = clips.shape[:2]
    feats = model.forward_frames(clips.reshape(b * l, *clips.shape[2:]))
    return model.pool_features(feats.view(b, l, -1))


def encode_clip_batch(model: MineCLIP, data: ClipSet, idx) -> torch.Tensor:
    """Clips `idx` -> (B, D) video embeddings, each distinct frame through the ViT once (differentiable)."""
    rows = data.index[np.asarray(idx)]  # (B, L)
    used, inverse = np.unique(rows, return_inverse=True)
    feats = model.forward_frames(torch.from_numpy(data.frames[used]))  # (U, D)
    return model.pool_features(feats[torch.from_numpy(inverse.reshape(rows.shape)).to(feats.device)])


def contrastive_loss(video: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                     labels: list[str]) -> torch.Tensor:
    """Symmetric InfoNCE with targets spread over same-label pairs (CLIP's loss when labels are distinct)."""
    v = F.normalize(video.float(), dim=-1)
    t = F.normalize(text.float(), dim=-1)
    logits = logit_scale.exp().clamp(max=100.0) * v @ t.T  # (B, B)
    codes = {l: i for i, l in enumerate(dict.fromkeys(labels))}
    lab = torch.tensor([codes[l] for l in labels], device=logits.device)
    same = (lab[:, None] == lab[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    loss_v = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_t = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (loss_v + loss_t) / 2


def encode_texts(model: MineCLIP, texts: list[str]) -> torch.Tensor:
    """(B, D) text embeddings (differentiable), each distinct caption through the text tower once."""
    names = list(dict.fromkeys(texts))
    emb = model.forward_text(model.tokenize(names))
    pos = {n: i for i, n in enumerate(names)}
    return emb[torch.tensor([pos[t] for t in texts], device=emb.device)]


def paraphrase_texts(texts: list[str], goals: list[str], share: float, seed) -> list[str]:
    """`texts` with a `share` of them (drawn from `seed`) replaced by a random template phrasing of their goal
    (`steve1_ray.world.phrases.template_phrases`); texts of goals without templates are kept."""
    from steve1_ray.world.phrases import template_phrases

    if share <= 0:
        return list(texts)
    table = template_phrases()
    rng = np.random.default_rng(seed)
    swap = rng.random(len(texts)) < share
    pick = rng.random(len(texts))
    return [table[g][int(u * len(table[g]))] if s and g in table else t
            for t, g, s, u in zip(texts, goals, swap, pick)]


@torch.no_grad()
def phrase_metrics(model: MineCLIP, data: ClipSet, v: torch.Tensor) -> dict:
    """Goal retrieval by phrasings that are not the clips' own texts, for the goals present in `data`:
    `heldout_phrase/` (hand-written phrasings no template produces), `caption/` (the demonstrators' captions) and
    `template/` (up to 8 template phrasings per goal, evenly spaced in the sorted list). For each phrase:
    `goal_acc` — is the nearest goal (mean embedding of the goal's clips) the phrase's goal? chance 1/n_goals;
    `r@1` — is the nearest clip of the phrase's goal? chance: the goal's share of the clips."""
    from steve1_ray.world.phrases import captions, heldout_phrases, template_phrases

    names = sorted(set(data.goals))
    goals = np.asarray(data.goals)
    if len(names) < 2:
        return {}
    sets = {"heldout_phrase": heldout_phrases(), "caption": captions(),
            "template": {g: p[::max(1, len(p) // 8)][:8] for g, p in template_phrases().items()}}
    centroids = F.normalize(torch.stack([v[torch.from_numpy(goals == n)].mean(0) for n in names]), dim=-1)
    out = {"phrase_goal_chance": 1.0 / len(names)}
    for key, table in sets.items():
        rows = [(g, p) for g in names for p in table.get(g, ())]
        if not rows:
            continue
        want = np.asarray([g for g, _ in rows])
        t = F.normalize(model.encode_text([p for _, p in rows]).float(), dim=-1)
        out[f"{key}/goal_acc"] = float((np.asarray(names)[(t @ centroids.T).argmax(1).cpu().numpy()] == want).mean())
        out[f"{key}/r@1"] = float((goals[(t @ v.T).argmax(1).cpu().numpy()] == want).mean())
        out[f"{key}/r@1_chance"] = float(np.mean([(goals == g).mean() for g in want]))
        out[f"{key}/n"] = len(rows)
    return out if len(out) > 1 else {}  # no goal of the world's (e.g. another world's captions): nothing


@torch.no_grad()
def embed_clipset(model: MineCLIP, data: ClipSet, frame_batch: int = 256) -> torch.Tensor:
    """(M, D) video embeddings of every clip; each frame of the set is encoded once."""
    feats = model.encode_frames(data.frames, batch_size=frame_batch)  # (U, D)
    return torch.cat([model.pool_features(feats[torch.from_numpy(data.index[i:i + 256])])
                      for i in range(0, len(data), 256)]).float()


def nearest_goal(v: torch.Tensor, t: torch.Tensor, goals: Sequence[str]) -> np.ndarray:
    """Clip -> goal: each clip's (`v`, normalised) nearest goal, each goal represented by all of its captions
    seen here (the mean of their normalised embeddings `t`, one row per clip)."""
    names = sorted(set(goals))
    proto = torch.stack([t[[i for i, g in enumerate(goals) if g == n]].mean(0) for n in names])
    return np.asarray(names)[(v @ F.normalize(proto, dim=-1).T).argmax(dim=1).cpu().numpy()]


@torch.no_grad()
def retrieval_metrics(model: MineCLIP, data: ClipSet) -> dict:
    """text→clip R@1/R@5 by goal, clip→goal accuracy over the goals' captions, with chance levels."""
    if len(data) < 2:
        return {}
    model.eval()
    v = F.normalize(embed_clipset(model, data), dim=-1)
    t = F.normalize(model.encode_text(data.texts), dim=-1)
    goals = np.asarray(data.goals)
    sim = (t @ v.T).cpu().numpy()  # (texts, clips)
    order = np.argsort(-sim, axis=1)
    match = goals[order] == goals[:, None]
    out = {"n_clips": len(data), "n_goals": int(len(set(data.goals)))}
    m = len(data)
    same = (goals[:, None] == goals[None, :]).sum(axis=1)
    for k in (1, 5):
        out[f"text_to_clip_r@{k}"] = float(match[:, :k].any(axis=1).mean())
        # chance: probability that k random clips include one of the same goal
        chance = 1 - np.array([math.comb(m - s, k) / math.comb(m, k) if m - s >= k else 0.0 for s in same])
        out[f"text_to_clip_r@{k}_chance"] = float(chance.mean())
    names = sorted(set(data.goals))
    pred = nearest_goal(v, t, data.goals)
    out["clip_to_goal_acc"] = float((pred == goals).mean())
    out["clip_to_goal_chance"] = 1.0 / len(names)
    if data.is_end.any():
        out["end_clip_to_goal_acc"] = float((pred[data.is_end] == goals[data.is_end]).mean())
        for name in names:  # per goal: the goals whose clips the policy cannot tell apart show here
            mine = data.is_end & (goals == name)
            if mine.any():
                out[f"end_clip_to_goal_acc/{name}"] = float((pred[mine] == name).mean())
    # chance of a guess drawn from the goal frequencies (a stronger baseline than 1/n_goals)
    freq = np.unique(goals, return_counts=True)[1] / m
    out["clip_to_goal_prior_chance"] = float((freq ** 2).sum())
    out.update(phrase_metrics(model, data, v))
    return out


# --------------------------------------------------------------------------------------------------
# Training


@torch.no_grad()
def center_init(model: MineCLIP, data: ClipSet, n_clips: int = 64, seed: int = 0) -> None:
    """Data-dependent init of a fresh model: zero-mean video and text embeddings over a sample of the data.

    At random init every clip embeds to nearly the same direction (mean pairwise cosine 0.94-0.98 on crafter
    clips: the ViT's CLS token and the temporal mean average the small local differences away), and contrastive
    training then collapses both towers onto it. Setting the biases of the last LayerNorms (ViT `ln_post`,
    temporal `norm`, text `ln_final`) to minus their mean normalised output removes that common part; the
    architecture and checkpoint layout are unchanged."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(data), size=min(n_clips, len(data)), replace=False))
    vit = model.image_encoder
    frames = torch.from_numpy(data.frames[np.unique(data.index[idx])])
    captured = []
    hook = vit.ln_post.register_forward_hook(lambda m, i, o: captured.append(o - m.bias))
    model.encode_frames(frames)
    hook.remove()
    vit.ln_post.bias.copy_(-torch.cat(captured).mean(0))
    norm = model.temporal_encoder.attn.model.norm
    video = embed_clipset(model, data.subset(idx))  # (n, D) pooled = mean_t(norm(.)) ; norm's bias passes through
    norm.bias.sub_(video.mean(0))
    gpt = model.clip_model.text_model
    captured = []
    hook = gpt.ln_final.register_forward_hook(lambda m, i, o: captured.append(o - m.bias))
    tokens = model.tokenize(sorted(set(data.texts)))
    gpt(tokens)
    hook.remove()
    eot = torch.cat(captured)[torch.arange(len(tokens)), tokens.argmax(dim=-1)]
    gpt.ln_final.bias.copy_(-eot.mean(0))


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine to 0: the factor applied to each group's base lr."""
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def progress_line(metrics: dict, epochs: int) -> str:
    """One human line per epoch: loss, held-out retrieval, time so far and the ETA of the remaining epochs."""
    e, elapsed = metrics["epoch"], metrics["seconds"]
    parts = [f"embedder: epoch {e}/{epochs}", f"loss {metrics['train/loss']:.3f}"]
    for key, name in (("val/text_to_clip_r@1", "val R@1"), ("val/clip_to_goal_acc", "clip->goal"),
                      ("val/caption/goal_acc", "caption->goal"), ("val/heldout_phrase/goal_acc", "held-out phrase->goal")):
        if key in metrics:
            parts.append(f"{name} {metrics[key]:.2f}")
    if "val/phrase_goal_chance" in metrics:
        parts.append(f"(chance {metrics['val/phrase_goal_chance']:.2f})")
    parts += [f"elapsed {duration(elapsed)}", f"ETA {duration(elapsed / e * (epochs - e))}"]
    return "  ".join(parts)


def train_embedder(cfg: EmbedderConfig, train: ClipSet, val: ClipSet, log=print, rank: int = 0,
                   world_size: int = 1, select: ClipSet | None = None,
                   progress: str | Path | None = None) -> tuple[MineCLIP, dict]:
    """Plain PyTorch loop. With `select` episodes, the returned model is the epoch that scored best on them
    (`selection_score`); `info["final"]` is that epoch's metrics and `info["best_epoch"]` its number. With
    world_size > 1 (under Ray Train) each rank takes its slice of every batch and gradients are averaged with an
    all-reduce before the step (the loss is not a per-sample sum, so DDP's forward hooks would not fit the text
    and pooling towers used outside `forward`). `progress`: a file that gets each epoch's `progress_line`."""
    torch.manual_seed(cfg.seed)
    model = _initial_model(cfg)
    if cfg.center_init and not cfg.init:
        center_init(model, train, seed=cfg.seed)
    if cfg.use_gpu and torch.cuda.is_available():
        model = model.to("cuda")
    model.train()
    scale = model.clip_model.logit_scale  # also named reward_head.clip_model.logit_scale (an alias)
    text_ids = {id(p) for p in model.clip_model.text_model.parameters()}
    groups = [{"params": [scale], "weight_decay": 0.0, "base_lr": cfg.logit_scale_lr}]
    for text in (False, True):
        named = [(n, p) for n, p in model.named_parameters() if p is not scale and (id(p) in text_ids) == text]
        decays = [p.ndim >= 2 and "embedding" not in n and "pos_emb" not in n for n, p in named]
        lr = cfg.lr * (cfg.text_lr_scale if text else 1.0)
        groups += [{"params": [p for (_, p), d in zip(named, decays) if d], "weight_decay": cfg.weight_decay,
                    "base_lr": lr},
                   {"params": [p for (_, p), d in zip(named, decays) if not d], "weight_decay": 0.0, "base_lr": lr}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    epoch_batches = [segment_batches(train, cfg.batch_size, cfg.seed + e) for e in range(cfg.epochs)]
    total = sum(len(b) for b in epoch_batches)
    history, step, t0, c0 = [], 0, time.time(), time.process_time()
    best = None  # (score, epoch, state_dict) on the selection episodes
    for epoch, batches in enumerate(epoch_batches):
        model.train()
        losses = []
        # the texts of this epoch: a share of the captions replaced by template paraphrases (same on every rank)
        texts = paraphrase_texts(train.texts, train.goals, cfg.paraphrases, [cfg.seed, 29, epoch])
        for batch in batches:
            idx = batch[rank::world_size]
            if len(idx) < 2:
                continue
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * _schedule(step, total, cfg.warmup_steps)
            video = encode_clip_batch(model, train, idx)  # (B, D)
            text = encode_texts(model, [texts[i] for i in idx])  # (B, D)
            loss = contrastive_loss(video, text, model.clip_model.logit_scale, [train.goals[i] for i in idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world_size > 1:
                _average_gradients(model, world_size)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():  # CLIP clamps the learned temperature at 100
                model.clip_model.logit_scale.clamp_(max=math.log(100.0))
            losses.append(loss.item())
            step += 1
        metrics = {"epoch": epoch + 1, "step": step, "train/loss": float(np.mean(losses)) if losses else float("nan"),
                   "logit_scale": float(model.clip_model.logit_scale.detach().exp()), "seconds": round(time.time() - t0, 1),
                   "cpu_seconds": round(time.process_time() - c0, 1)}
        if rank == 0:
            metrics.update({f"val/{k}": v for k, v in retrieval_metrics(model, val).items()})
            if select is not None and len(select) >= 2:
                sel = retrieval_metrics(model, select)
                metrics.update({f"select/{k}": v for k, v in sel.items()})
                metrics["select/score"] = selection_score(sel)
                if best is None or metrics["select/score"] > best[0]:
                    best = (metrics["select/score"], epoch, copy.deepcopy(model.state_dict()))
            log(json.dumps(metrics))
            log(progress_line(metrics, cfg.epochs))
            if progress is not None:
                with open(progress, "a") as f:
                    f.write(progress_line(metrics, cfg.epochs) + "\n")
        history.append(metrics)
    best_epoch = len(history) - 1
    if best is not None:
        best_epoch = best[1]
        model.load_state_dict(best[2])
        log(f"embedder: keeping epoch {best_epoch + 1} (best selection score {best[0]:.3f})")
    model.eval()
    return model.cpu(), {"history": history, "final": history[best_epoch] if history else {},
                         "best_epoch": best_epoch + 1}


def _initial_model(cfg: EmbedderConfig) -> MineCLIP:
    """A seeded fresh model of cfg's size, or `cfg.init` (ours, or the released attn.pth: md5-verified)."""
    if not cfg.init:
        return load_mineclip(None, cfg.model_config(), seed=cfg.seed)
    try:
        model = load_mineclip(cfg.init)
    except ValueError as e:
        if "md5='official'" not in str(e):
            raise
        return load_mineclip(cfg.init, md5="official")  # refused unless it is the released file
    if model.cfg.goal_whiten:  # its whitening was fitted to these weights; training them would leave it stale
        raise ValueError(f"init={cfg.init!r} has a whitened goal space (steve1 whiten-embedder): start from the "
                         "embedder it was made from, and whiten the new one again after training")
    return model


def _average_gradients(model: torch.nn.Module, world_size: int) -> None:
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world_size


def _train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: every rank cuts the same clips (deterministic), trains on its slice of each batch."""
    import tempfile

    import ray.train

    cfg = EmbedderConfig(**config)
    ctx = ray.train.get_context()
    data = build_clips(cfg, cfg.model_config().window if not cfg.init else 16)
    train, val, select = split_train_val_select(data, cfg)
    # rank 0's log lines stay in Ray's worker logs (the quick start runs with log_to_driver=False): its per-epoch
    # progress lines also go to <out>/progress.log, which the driver tails (`run`); `out` is absolute here
    core, info = train_embedder(cfg, train, val, log=print, rank=ctx.get_world_rank(),
                                world_size=ctx.get_world_size(), select=select,
                                progress=Path(cfg.out) / "progress.log" if ctx.get_world_rank() == 0 else None)
    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if ctx.get_world_rank() == 0:
            save_mineclip(core, Path(d) / "mineclip.pth")
            (Path(d) / "metrics.json").write_text(json.dumps(info))
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report({k: v for k, v in info["final"].items() if isinstance(v, (int, float))}, checkpoint=ckpt)


class _Tail:
    """While in the `with` block, a thread passes each new line of `path` to `log` (and the rest on exit)."""

    def __init__(self, path: Path, log, every: float = 1.0):
        import threading

        self.path, self.log, self.every, self.pos = path, log, every, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                chunk = f.read()
        except OSError:
            return
        done = chunk[:chunk.rfind(b"\n") + 1]  # whole lines only
        self.pos += len(done)
        for line in done.decode(errors="replace").splitlines():
            self.log(line)

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            self._poll()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self._poll()


def run(cfg: EmbedderConfig, log=print) -> dict:
    """Train, then write <out>/mineclip.pth, metrics.json and config.yaml; returns the run's info
    ({"history": [per-epoch metrics], "final": {...}, "seconds": s, "embed_dim": D, "n_train_clips": ...})."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    t0 = time.time()
    window = cfg.model_config().window if not cfg.init else 16
    progress = out / "progress.log"  # one line per epoch with the ETA (see `progress_line`)
    progress.write_text("")
    if cfg.num_workers == 0:
        data = build_clips(cfg, window, log=log)
        train, val, select = split_train_val_select(data, cfg)
        log(f"embedder: {len(train)} train clips ({len(train.frames)} frames), {len(val)} val clips, "
            f"{len(select) if select is not None else 0} selection clips, "
            f"{len(set(data.goals))} goals ({time.time() - t0:.0f}s to cut)")
        model, info = train_embedder(cfg, train, val, log=log, select=select, progress=progress)
        save_mineclip(model, out / "mineclip.pth")
        info.update(n_train_clips=len(train), n_val_clips=len(val))
    else:
        import ray
        import ray.train
        from ray.train.torch import TorchTrainer

        connect()
        check_workers_fit(cfg.num_workers, cfg.cpus_per_worker, cfg.use_gpu)
        log(f"embedder: {cfg.num_workers} Ray Train workers; per-epoch progress from {progress}")
        resources = {"CPU": cfg.cpus_per_worker} | ({"GPU": 1} if cfg.use_gpu else {})
        trainer = TorchTrainer(
            _train_loop_per_worker, train_loop_config={**to_dict(cfg), "out": str(out.resolve())},
            scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                                   resources_per_worker=resources),
            run_config=ray.train.RunConfig(name=f"embedder-{int(time.time())}",
                                           storage_path=cfg.storage_path or str((out / "ray").resolve())))
        with _Tail(progress, log):
            result = trainer.fit()
        with result.checkpoint.as_directory() as d:
            (out / "mineclip.pth").write_bytes((Path(d) / "mineclip.pth").read_bytes())
            info = json.loads((Path(d) / "metrics.json").read_text())
    info["seconds"] = round(time.time() - t0, 1)
    info["embed_dim"] = load_mineclip(out / "mineclip.pth").embed_dim
    (out / "metrics.json").write_text(json.dumps(info, indent=1))
    log(f"embedder: wrote {out / 'mineclip.pth'} ({info['seconds']}s); final {json.dumps(info['final'])}")
    return info


def _run(cfg: EmbedderConfig) -> int:
    run(cfg)  # writes config.yaml beside the checkpoint itself
    return 0


JOB = Job("train-embedder", EmbedderConfig, _run, presets="embedder", errors=(FileNotFoundError, ValueError),
          summary=__doc__.strip().splitlines()[0],
          examples="""
          steve1 train-embedder --config world recordings=data/world out=data/embedder epochs=10
          steve1 train-embedder recordings=data/world out=data/embedder mineclip.embed_dim=768""")


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, argv)


if __name__ == "__main__":
    sys.exit(main())
