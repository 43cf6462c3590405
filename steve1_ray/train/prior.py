"""`steve1 train-prior` / `jobs/train_prior.py`: train STEVE-1's CVAE prior (text embedding -> visual goal).

    python jobs/train_prior.py --config default pairs=data/prior_dataset/data.pkl out=weights/prior.pt
    python jobs/train_prior.py --config world world=data/world data=data/world_shards out=weights/world_prior.pt

Pairs come from a file (the original `data.pkl` {'text_embeddings', 'visual_embeddings'}, or an `.npz` with
those two arrays), or are built from a recorded world: every caption of `<world>/captions.jsonl` (a goal
segment: episode, start, end, text) is paired with the visual embeddings of the 16-frame clips that end on the
segment's last `clips_per_caption` kept frames, read from the world's shard dataset; the caption text is encoded
by the text tower of the same embedder that produced those visual embeddings (named in the dataset manifest).

Training follows the original train_vae.py: loss = beta * KL (summed) + MSE (mean), AdamW (lr 1e-4,
weight decay 0.01), batch 256, 50 epochs, the last `n_val` shuffled pairs held out; the state_dict with the
best validation loss is saved in the released prior's format (`save_prior`). Fixed here: the shuffle is
seeded and the validation loss uses a fixed noise seed, so it is comparable between epochs and runs.
"""
from __future__ import annotations

import copy
import io
import json
import math
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from steve1_ray.config import ConfigError, check, save_config, to_dict
from steve1_ray.progress import Meter
from steve1_ray.runner import Job, run_job



@dataclass
class PriorConfig:
    pairs: Optional[str] = None
    """A pairs file: the original `data.pkl` or an `.npz` with `text_embeddings` and `visual_embeddings`."""
    world: Optional[str] = None
    """A recorded world folder (`steve1 record`) whose `captions.jsonl` gives the texts (used when pairs is null)."""
    data: Optional[str] = None
    """The shard dataset built from that world (`steve1 dataset`): the visual embeddings."""
    clips_per_caption: int = 4
    """Visual embeddings per caption: clips ending on the last k kept frames of the captioned segment."""
    mineclip_preset: Optional[str] = None
    """The text encoder's architecture (attn | debug); null = the one stored in its checkpoint, or the dataset
    manifest's preset when no checkpoint is named."""
    mineclip_path: Optional[str] = None
    """The text encoder; null = the embedder named in the dataset's manifest (it must match the visual side)."""
    save_pairs: Optional[str] = None
    """Also write the pairs built from the world to this `.npz` (reusable as `pairs=`)."""

    hidden_dim: int = 512
    """Width of the CVAE's hidden layers (the released prior: 512)."""
    latent_dim: int = 512
    """Size of the CVAE's latent z (the released prior: 512)."""
    beta: float = 1.0
    """Weight of the KL term: loss = beta * KL (summed) + MSE (mean); the original's 1.0."""
    lr: float = 1e-4
    """Learning rate (AdamW, constant); the original's 1e-4."""
    weight_decay: float = 0.01
    """AdamW weight decay on every parameter (torch's default 0.01, as the original)."""
    batch_size: int = 256
    """Pairs per optimizer step (the original's 256)."""
    epochs: int = 50
    """Passes over the training pairs (the original's 50); the epoch with the best val loss is saved."""
    n_val: int = 200
    """Pairs held out for validation (the original: the last 200 after shuffling)."""
    patience: int = 0
    """Stop after this many epochs without a better validation loss (0 = run all epochs)."""
    seed: int = 0
    """Seed of the train/val split, the initial weights, the shuffles and the CVAE noise."""
    out: str = "data/weights/steve1/trained_prior.pt"
    """Best prior (plain state_dict, the released `steve1_prior.pt` format); `<stem>.json` holds the history."""

    def __post_init__(self):
        check(self.pairs is not None or (self.world is not None and self.data is not None),
              "give pairs=<data.pkl|pairs.npz>, or world=<recorded world> and data=<its shard dataset>")
        check(self.clips_per_caption >= 1, f"clips_per_caption={self.clips_per_caption} must be >= 1")
        for name in ("hidden_dim", "latent_dim", "batch_size", "epochs"):
            check(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        check(self.n_val >= 1, f"n_val={self.n_val} must be >= 1 (a validation split is required)")
        check(self.lr > 0 and self.beta >= 0 and self.weight_decay >= 0,
              f"lr={self.lr} must be > 0, beta={self.beta} and weight_decay={self.weight_decay} >= 0")
        check(self.patience >= 0, f"patience={self.patience} must be >= 0")


# ------------------------------------------------------------------------------------------------------
# Pairs
# ------------------------------------------------------------------------------------------------------
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Reads the original data.pkl (lists / dicts of NumPy arrays) and refuses anything else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: a pairs file holds only arrays")


def load_pairs(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(text (N, D), visual (N, D)) float32 from data.pkl or an .npz."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"pairs file {p} not found (STEVE-1's is data/prior_dataset/data.pkl)")
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    else:
        data = _NumpyOnlyUnpickler(io.BytesIO(p.read_bytes())).load()
    missing = {"text_embeddings", "visual_embeddings"} - set(data)
    if missing:
        raise KeyError(f"{p}: missing {sorted(missing)}; expected text_embeddings and visual_embeddings")
    text = np.asarray(np.array(data["text_embeddings"]), np.float32)
    visual = np.asarray(np.array(data["visual_embeddings"]), np.float32)
    d = text.shape[-1]
    text, visual = text.reshape(-1, d), visual.reshape(-1, visual.shape[-1])
    if text.shape != visual.shape:
        raise ValueError(f"{p}: {text.shape[0]} text and {visual.shape[0]} visual embeddings of widths "
                         f"{text.shape[1]}/{visual.shape[1]}; they must pair up one to one")
    return text, visual


def world_pairs(cfg: PriorConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pairs from a recorded world's captions and its shard dataset (see the module docstring)."""
    from steve1_ray.data import shards
    from steve1_ray.data.contractor import kept_index
    from steve1_ray.data.sources import safe_id

    captions_path = Path(cfg.world) / "captions.jsonl"
    if not captions_path.exists():
        raise FileNotFoundError(f"{captions_path} not found: record the world with `steve1 record out={cfg.world}`")
    captions = [json.loads(line) for line in captions_path.read_text().splitlines() if line.strip()]
    episodes = shards.list_episodes(cfg.data)
    manifest = shards.read_manifest(cfg.data)
    options = manifest.get("options", {})
    if options.get("embedder", "mineclip") == "none":
        raise ValueError(f"{cfg.data} was built with embedder=none (no visual embeddings): rebuild it with MineCLIP")

    visual, texts = [], []
    kept, loaded = {}, {}
    for cap in captions:
        sid = safe_id(cap["episode"])
        eid = next((e for e in episodes if e == sid or e.endswith("-" + sid)), None)
        if eid is None:
            continue
        actions = cap.get("actions")
        if actions and not Path(actions).is_absolute():
            actions = str(Path(cfg.world) / actions)
        if actions not in kept:  # an episode's many captions share its jsonl and shard: read each once
            kept[actions] = kept_index(actions) if actions and Path(actions).exists() else (None, None)
        frame_of, keep = kept[actions]
        end = min(int(cap["end"]), (len(frame_of) if frame_of is not None else episodes[eid]["n_frames"])) - 1
        lines = np.arange(int(cap["start"]), end + 1)
        if keep is not None:
            lines = lines[keep[lines]]
            frames = frame_of[lines]
        else:
            frames = lines
        if eid not in loaded:
            loaded[eid] = shards.load_episode(cfg.data, eid, columns=["embeds", "embed_valid"])
        ep = loaded[eid]
        frames = frames[frames < len(ep["embeds"])]
        frames = frames[ep["embed_valid"][frames]][-cfg.clips_per_caption:]
        for f in frames:
            visual.append(ep["embeds"][f])
            texts.append(cap["text"])
    if not visual:
        raise ValueError(f"no caption of {captions_path} matched an episode of {cfg.data} with a valid embedding: "
                         "is the dataset built from this world (sources=[{world}/contractor])?")
    embedder = _text_encoder(cfg, options)
    unique = sorted(set(texts))
    with torch.no_grad():
        encoded = embedder.encode_text(unique).float().cpu().numpy()
    by_text = dict(zip(unique, encoded))
    text = np.stack([by_text[t] for t in texts]).astype(np.float32)
    return text, np.stack(visual).astype(np.float32), texts


def _text_encoder(cfg: PriorConfig, options: dict):
    from steve1_ray.models.loading import load_embedder

    path = cfg.mineclip_path or options.get("mineclip_path")
    # A checkpoint of ours carries its architecture; the dataset's preset only describes a random/attn model.
    preset = cfg.mineclip_preset or (None if path else options.get("mineclip_preset", "attn"))
    return load_embedder(path, preset, device="cpu")


# ------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------
def split_pairs(text: np.ndarray, visual: np.ndarray, n_val: int, seed: int):
    """Seeded shuffle; the last n_val pairs are validation (at most a fifth of the pairs)."""
    n = len(text)
    if n < 2:
        raise ValueError(f"{n} pairs: need at least 2 (one to train, one to validate)")
    n_val = min(n_val, max(1, n // 5))
    perm = np.random.default_rng(seed).permutation(n)
    tr, va = perm[:-n_val], perm[-n_val:]
    return (text[tr], visual[tr]), (text[va], visual[va])


@torch.no_grad()
def evaluate(prior, text: torch.Tensor, visual: torch.Tensor, beta: float, batch_size: int, seed: int) -> dict:
    """Mean over batches of the loss terms, with fixed noise (a seeded generator)."""
    prior.eval()
    gen = torch.Generator().manual_seed(seed)
    sums = {"loss": 0.0, "kl": 0.0, "mse": 0.0}
    n_batches = 0
    for i in range(0, len(text), batch_size):
        _, parts = prior.loss(visual[i:i + batch_size], text[i:i + batch_size], beta=beta, generator=gen)
        for k in sums:
            sums[k] += parts[k]
        n_batches += 1
    prior.train()
    return {k: v / n_batches for k, v in sums.items()}


def train_prior(cfg: PriorConfig, text: np.ndarray, visual: np.ndarray, log=print) -> dict:
    """Train on the pairs; save the best (by val loss) prior to `cfg.out`; return the summary. `log` gets the
    progress lines (every tenth of the epochs, at least every minute, with an ETA)."""
    from steve1_ray.models.prior import TranslatorVAE, save_prior

    torch.manual_seed(cfg.seed)
    (tr_t, tr_v), (va_t, va_v) = split_pairs(text, visual, cfg.n_val, cfg.seed)
    tr_t, tr_v, va_t, va_v = (torch.from_numpy(np.ascontiguousarray(a)) for a in (tr_t, tr_v, va_t, va_v))
    prior = TranslatorVAE(text.shape[1], cfg.hidden_dim, cfg.latent_dim)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = {"val_loss": math.inf, "epoch": -1}
    best_state, history, since_best = None, [], 0
    meter = Meter("train-prior", "epoch", cfg.epochs, write=log)
    meter.say(f"{len(tr_t)} train / {len(va_t)} val pairs of {text.shape[1]}-d embeddings; "
              f"{sum(p.numel() for p in prior.parameters()) / 1e6:.2f}M parameters")
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(tr_t), generator=gen)
        sums, n_batches = {"loss": 0.0, "kl": 0.0, "mse": 0.0}, 0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss, parts = prior.loss(tr_v[idx], tr_t[idx], beta=cfg.beta, generator=gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for k in sums:
                sums[k] += parts[k]
            n_batches += 1
        train = {k: v / n_batches for k, v in sums.items()}
        val = evaluate(prior, va_t, va_v, cfg.beta, cfg.batch_size, seed=cfg.seed + 1)
        history.append({"epoch": epoch, **{f"train/{k}": v for k, v in train.items()},
                        **{f"val/{k}": v for k, v in val.items()}})
        improved = val["loss"] < best["val_loss"]
        if improved:
            best, best_state, since_best = {"val_loss": val["loss"], "epoch": epoch}, copy.deepcopy(
                prior.state_dict()), 0
        else:
            since_best += 1
        stop = bool(cfg.patience and since_best >= cfg.patience)
        meter.update(epoch + 1, f"train loss {train['loss']:.4g} (kl {train['kl']:.4g}, mse {train['mse']:.4g})",
                     f"val loss {val['loss']:.4g} (mse {val['mse']:.4g}){' best' if improved else ''}", force=stop)
        if stop:
            meter.say(f"early stopping: no better val loss in {cfg.patience} epochs")
            break
    prior.load_state_dict(best_state)
    out = save_prior(prior, cfg.out)
    summary = {"out": str(out), "best_val_loss": best["val_loss"], "best_epoch": best["epoch"],
               "n_train": len(tr_t), "n_val": len(va_t), "embed_dim": int(text.shape[1]),
               "config": to_dict(cfg), "history": history}
    Path(out).with_suffix(".json").write_text(json.dumps(summary, indent=1))
    return summary


def _run(cfg: PriorConfig) -> int:
    try:  # bad pair files or recordings are bad input (exit 2); an error while training is a bug (traceback)
        if cfg.pairs:
            text, visual = load_pairs(cfg.pairs)
        else:
            text, visual, _ = world_pairs(cfg)
    except (FileNotFoundError, KeyError, ValueError, pickle.UnpicklingError) as e:
        raise ConfigError(str(e)) from e
    if not cfg.pairs and cfg.save_pairs:
        Path(cfg.save_pairs).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cfg.save_pairs, text_embeddings=text, visual_embeddings=visual)
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    save_config(cfg, Path(cfg.out).with_suffix(".yaml"))
    summary = train_prior(cfg, text, visual)
    print(f"best val loss {summary['best_val_loss']:.4f} at epoch {summary['best_epoch'] + 1}; prior -> {summary['out']}")
    return 0


JOB = Job("train-prior", PriorConfig, _run, presets="prior",
          summary="Train the CVAE prior (text embedding -> visual goal embedding); the config is saved beside it.",
          examples="""
          steve1 train-prior --config world world=data/world data=data/shards out=data/prior/prior.pt
          steve1 train-prior --config default pairs=data/visual_prompt_embeds.pkl""")


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, argv)


if __name__ == "__main__":
    sys.exit(main())
