"""Train a MineCLIP-architecture video–text embedder on captioned recordings (a world's own goal space).

STEVE-1's goals live in MineCLIP's joint video–text space. The released MineCLIP knows Minecraft, not the
embedded world, so this job trains the same architecture (any size; `MineCLIPConfig`) on 16-frame clips cut
from recordings, each paired with the caption of the goal segment it comes from, with MineCLIP's symmetric
InfoNCE and its learned temperature (`clip_model.logit_scale`). The checkpoint is written in MineCLIP's
`attn.pth` layout, so `load_mineclip` (and the dataset, prior, serving and evaluation jobs) read it unchanged.

    steve1 train-embedder recordings=data/world out=runs/embedder
    python jobs/train_embedder.py recordings=data/world out=runs/embedder mineclip.embed_dim=768

Positives: several captions are paraphrases of one goal ("chop a tree", "collect wood"), and a batch holds many
clips of the same goal, so the InfoNCE targets are spread uniformly over every pair with the same goal label
(multi-positive InfoNCE); with all-distinct labels it is exactly CLIP's loss.

Validation (episodes held out): text→clip retrieval R@1 / R@5 — for each held-out clip's caption, are the
top-k clips of the same goal? — and clip→goal accuracy over the goals' captions, each with its chance level.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from steve1_ray.config import check, load_config, save_config, to_dict
from steve1_ray.models.mineclip import MineCLIP, MineCLIPConfig, save_mineclip


@dataclass
class EmbedderConfig:
    """Options of the embedder training job."""

    recordings: str = "data/world"
    """root written by `steve1 record` (holds captions.jsonl and the contractor/ videos)"""
    captions: str = ""
    """captions file; default <recordings>/captions.jsonl"""
    out: str = "runs/embedder"
    """output folder: mineclip.pth (attn.pth layout), metrics.json, config.yaml"""
    preset: str = "debug"
    """MineCLIPConfig preset the architecture starts from (attn = the released size)"""
    mineclip: dict = field(default_factory=lambda: {"patch_size": 32})
    """overrides of MineCLIPConfig fields, e.g. {embed_dim: 768, vision_layers: 4}; the default 32-pixel patches
    (5x8 tokens per 160x256 frame) make the debug size train on a CPU in minutes"""
    init: str = ""
    """optional MineCLIP checkpoint to start from (e.g. the released attn.pth to fine-tune)"""
    clips_per_segment: int = 4
    """clips cut from each caption segment: the last window before the segment ends, the rest at random"""
    min_segment_frames: int = 4
    """segments with fewer frames are skipped (a clip may reach back before a short segment's start)"""
    only_successful: bool = False
    """keep only segments whose goal was achieved"""
    max_clips: int = 2000
    val_fraction: float = 0.2
    """fraction of episodes held out for validation"""
    epochs: int = 6
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_steps: int = 20
    seed: int = 0
    num_workers: int = 0
    """Ray Train workers; 0 trains in this process (Ray not needed)"""
    use_gpu: bool = False
    storage_path: str = ""
    """Ray Train storage (local dir or s3://); default <out>/ray"""

    def __post_init__(self):
        check(self.clips_per_segment >= 1, f"clips_per_segment={self.clips_per_segment!r} must be >= 1")
        check(0.0 <= self.val_fraction < 1.0, f"val_fraction={self.val_fraction!r} must be in [0, 1)")
        check(self.epochs >= 1 and self.batch_size >= 2,
              f"epochs={self.epochs!r} must be >= 1 and batch_size={self.batch_size!r} >= 2 (InfoNCE needs negatives)")
        check(self.lr > 0, f"lr={self.lr!r} must be > 0")
        check(self.num_workers >= 0, f"num_workers={self.num_workers!r} must be >= 0")

    def model_config(self) -> MineCLIPConfig:
        return MineCLIPConfig.preset(self.preset, **self.mineclip)


# --------------------------------------------------------------------------------------------------
# Clips


@dataclass
class ClipSet:
    clips: np.ndarray  # (M, L, 160, 256, 3) uint8 RGB
    texts: list[str]  # caption of each clip
    goals: list[str]  # goal label of each clip (positives share it)
    episodes: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> "ClipSet":
        idx = list(idx)
        return ClipSet(self.clips[idx], [self.texts[i] for i in idx], [self.goals[i] for i in idx],
                       [self.episodes[i] for i in idx])


def read_captions(path: str | Path) -> list[dict]:
    """captions.jsonl: one line per goal segment {episode, video, actions, start, end, goal, text, ...}."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
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


def build_clips(cfg: EmbedderConfig, window: int) -> ClipSet:
    """Cut `window`-frame MineCLIP clips (160x256, cursor and null-dropping as the dataset job) per segment."""
    from steve1_ray.data import load_contractor_episode

    root = Path(cfg.recordings)
    rows = read_captions(cfg.captions or root / "captions.jsonl")
    by_episode: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("success") or not cfg.only_successful:
            by_episode.setdefault(r["episode"], []).append(r)
    rng = np.random.default_rng(cfg.seed)
    clips, texts, goals, episodes = [], [], [], []
    for name in sorted(by_episode):
        segs = by_episode[name]
        video = root / segs[0].get("video", f"contractor/{name}.mp4")
        actions = root / segs[0].get("actions", f"contractor/{name}.jsonl")
        ep = load_contractor_episode(video, actions, max_frame_mismatch=2)
        kept = np.asarray(ep.meta["kept_lines"])  # recording frame index of each kept frame
        for s in segs:
            # A clip is the window of `window` kept frames ending at a frame of the segment, as a STEVE-1 goal
            # embedding is (frames t-15..t). The first ends where the segment ends (the goal just reached);
            # it may reach back into the previous segment when the goal was quick.
            lo, hi = int(np.searchsorted(kept, s["start"])), int(np.searchsorted(kept, s["end"]))
            if hi - lo < cfg.min_segment_frames or hi < window:
                continue
            candidates = np.arange(max(lo + 1, window), hi + 1)
            ends = [hi] + list(rng.permutation(candidates[candidates != hi])[:cfg.clips_per_segment - 1])
            for e in sorted(int(x) for x in ends):
                clips.append(ep.frames_mineclip[e - window:e])
                texts.append(s["text"])
                goals.append(s.get("goal") or s["text"])
                episodes.append(name)
        if len(clips) >= cfg.max_clips:
            break
    if not clips:
        raise ValueError(f"no clips: {cfg.recordings} has no caption segment of >= {cfg.min_segment_frames} frames "
                         f"ending after frame {window} (record longer episodes, or lower min_segment_frames)")
    clips, texts, goals, episodes = clips[:cfg.max_clips], texts[:cfg.max_clips], goals[:cfg.max_clips], episodes[:cfg.max_clips]
    return ClipSet(np.stack(clips), texts, goals, episodes)


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


# --------------------------------------------------------------------------------------------------
# Loss and metrics


def encode_clips(model: MineCLIP, clips: torch.Tensor) -> torch.Tensor:
    """(B, L, H, W, 3) uint8 -> (B, D) video embeddings, differentiable."""
    b, l = clips.shape[:2]
    feats = model.forward_frames(clips.reshape(b * l, *clips.shape[2:]))
    return model.pool_features(feats.view(b, l, -1))


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


@torch.no_grad()
def retrieval_metrics(model: MineCLIP, data: ClipSet, batch_size: int = 32) -> dict:
    """text→clip R@1/R@5 by goal, clip→goal accuracy over the goals' captions, with chance levels."""
    if len(data) < 2:
        return {}
    model.eval()
    video = torch.cat([encode_clips(model, torch.from_numpy(data.clips[i:i + batch_size]))
                       for i in range(0, len(data), batch_size)])
    v = F.normalize(video.float(), dim=-1)
    t = F.normalize(model.encode_text(data.texts), dim=-1)
    goals = np.asarray(data.goals)
    sim = (t @ v.T).cpu().numpy()  # (texts, clips)
    order = np.argsort(-sim, axis=1)
    match = goals[order] == goals[:, None]
    out = {"n_clips": len(data), "n_goals": int(len(set(data.goals)))}
    for k in (1, 5):
        out[f"text_to_clip_r@{k}"] = float(match[:, :k].any(axis=1).mean())
        # chance: probability that k random clips include one of the same goal
        m = len(data)
        same = (goals[:, None] == goals[None, :]).sum(axis=1)
        chance = 1 - np.array([math.comb(m - s, k) / math.comb(m, k) if m - s >= k else 0.0 for s in same])
        out[f"text_to_clip_r@{k}_chance"] = float(chance.mean())
    # clip -> goal: each goal is represented by all of its captions seen here (mean of their embeddings)
    names = sorted(set(data.goals))
    proto = torch.stack([t[[i for i, g in enumerate(data.goals) if g == n]].mean(0) for n in names])
    pred = (v @ F.normalize(proto, dim=-1).T).argmax(dim=1).cpu().numpy()
    out["clip_to_goal_acc"] = float((np.asarray(names)[pred] == goals).mean())
    out["clip_to_goal_chance"] = 1.0 / len(names)
    return out


# --------------------------------------------------------------------------------------------------
# Training


def _lr_at(step: int, total: int, cfg: EmbedderConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def train_embedder(cfg: EmbedderConfig, train: ClipSet, val: ClipSet, log=print, rank: int = 0,
                   world_size: int = 1) -> tuple[MineCLIP, dict]:
    """Plain PyTorch loop. With world_size > 1 (under Ray Train) each rank takes its slice of every batch and
    gradients are averaged with an all-reduce before the step (the loss is not a per-sample sum, so DDP's
    forward hooks would not fit the text and pooling towers used outside `forward`)."""
    from steve1_ray.models.mineclip import load_mineclip

    torch.manual_seed(cfg.seed)
    model = load_mineclip(cfg.init or None, cfg.model_config() if not cfg.init else None, seed=cfg.seed)
    model.train()
    core = model
    decay = [p for n, p in core.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in core.named_parameters() if p.ndim < 2 or "embedding" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    tokens = core.tokenize(train.texts)
    steps_per_epoch = max(1, len(train) // (cfg.batch_size * world_size))
    total = steps_per_epoch * cfg.epochs
    history, step, t0 = [], 0, time.time()
    for epoch in range(cfg.epochs):
        core.train()
        perm = np.random.default_rng(cfg.seed + epoch).permutation(len(train))
        mine = perm[rank::world_size]
        losses = []
        for b in range(steps_per_epoch):
            idx = np.sort(mine[b * cfg.batch_size:(b + 1) * cfg.batch_size])
            if len(idx) < 2:
                continue
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, cfg)
            clips = torch.from_numpy(train.clips[idx])
            video = encode_clips(core, clips)
            text = core.forward_text(tokens[idx])
            loss = contrastive_loss(video, text, core.clip_model.logit_scale, [train.goals[i] for i in idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world_size > 1:
                _average_gradients(core, world_size)
            torch.nn.utils.clip_grad_norm_(core.parameters(), 1.0)
            opt.step()
            with torch.no_grad():  # CLIP clamps the learned temperature at 100
                core.clip_model.logit_scale.clamp_(max=math.log(100.0))
            losses.append(loss.item())
            step += 1
        metrics = {"epoch": epoch + 1, "train/loss": float(np.mean(losses)) if losses else float("nan"),
                   "logit_scale": float(core.clip_model.logit_scale.exp()), "seconds": round(time.time() - t0, 1)}
        if rank == 0:
            metrics.update({f"val/{k}": v for k, v in retrieval_metrics(core, val).items()})
            log(json.dumps(metrics))
        history.append(metrics)
    core.eval()
    return core, {"history": history, "final": history[-1] if history else {}}


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
    import ray.train.torch

    cfg = EmbedderConfig(**config)
    ctx = ray.train.get_context()
    model = MineCLIP(cfg.model_config())
    data = build_clips(cfg, model.window)
    train, val = split_by_episode(data, cfg.val_fraction, cfg.seed)
    core, info = train_embedder(cfg, train, val, rank=ctx.get_world_rank(), world_size=ctx.get_world_size())
    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if ctx.get_world_rank() == 0:
            save_mineclip(core, Path(d) / "mineclip.pth")
            (Path(d) / "metrics.json").write_text(json.dumps(info))
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report({k: v for k, v in info["final"].items() if isinstance(v, (int, float))}, checkpoint=ckpt)


def run(cfg: EmbedderConfig, log=print) -> dict:
    """Train, then write <out>/mineclip.pth, metrics.json and config.yaml; returns the final metrics."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    t0 = time.time()
    if cfg.num_workers == 0:
        window = cfg.model_config().window
        data = build_clips(cfg, window)
        train, val = split_by_episode(data, cfg.val_fraction, cfg.seed)
        log(f"embedder: {len(train)} train clips, {len(val)} val clips, {len(set(data.goals))} goals "
            f"({time.time() - t0:.0f}s to cut)")
        model, info = train_embedder(cfg, train, val, log=log)
        save_mineclip(model, out / "mineclip.pth")
    else:
        import ray
        import ray.train
        from ray.train.torch import TorchTrainer

        if not ray.is_initialized():
            ray.init(address="auto" if _cluster_running() else None)
        trainer = TorchTrainer(
            _train_loop_per_worker, train_loop_config=to_dict(cfg),
            scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu),
            run_config=ray.train.RunConfig(name=f"embedder-{int(time.time())}",
                                           storage_path=cfg.storage_path or str((out / "ray").resolve())))
        result = trainer.fit()
        with result.checkpoint.as_directory() as d:
            (out / "mineclip.pth").write_bytes((Path(d) / "mineclip.pth").read_bytes())
            info = json.loads((Path(d) / "metrics.json").read_text())
    info["seconds"] = round(time.time() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(info, indent=1))
    log(f"embedder: wrote {out / 'mineclip.pth'} ({info['seconds']}s); final {json.dumps(info['final'])}")
    return info


def _cluster_running() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS")) or Path("/tmp/ray/ray_current_cluster").exists()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="steve1 train-embedder", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=10 mineclip.embed_dim=768")
    args = p.parse_args(argv)
    cfg = load_config(EmbedderConfig, args.config, args.overrides)
    print(json.dumps(to_dict(cfg)))
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
