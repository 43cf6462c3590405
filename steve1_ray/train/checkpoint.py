"""Training checkpoints: what serving needs (`model/`) apart from what resuming needs (`training_state/`).

    <ckpt>/model/config.yaml        PolicyConfig (readable)
    <ckpt>/model/policy.model       the architecture as an original `.model` pickle
    <ckpt>/model/steve1.weights     weights in the original layout (no prefix; loads in STEVE-1's code)
    <ckpt>/train_config.yaml        the resolved TrainConfig of the run
    <ckpt>/training_state/progress.json   frames, steps, epoch, group (data position), best val loss, ...
    <ckpt>/training_state/optimizer.pt    AdamW state (+ GradScaler state)
    <ckpt>/training_state/rng.pt          torch / numpy / python RNG states of rank 0

`steve1_ray.load_policy(ckpt/"model/policy.model", ckpt/"model/steve1.weights")` rebuilds the policy.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from steve1_ray.config import save_config
from steve1_ray.train.config import is_uri

WEIGHTS_NAME = "steve1.weights"
MODEL_NAME = "policy.model"


@dataclass
class Progress:
    """Everything a resumed run needs to continue exactly where the checkpoint was written."""
    frames: int = 0            # training frames, all workers together
    steps: int = 0             # optimizer steps
    epoch: int = 0             # data position: epoch ...
    group: int = 0             # ... and next group of micro-batches within it
    best_val_loss: float = float("inf")
    last_val_loss: float = float("nan")
    vals_since_best: int = 0   # for early stopping
    next_snapshot_frames: int = 0
    attempt: int = 0           # how many times this run has (re)started from a checkpoint

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Progress":
        return cls(**json.loads(text))


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_model_dir(policy, out_dir: str | Path) -> Path:
    """`model/` of a checkpoint: config.yaml, policy.model and steve1.weights."""
    from steve1_ray.models.formats import save_weights, write_model_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(policy.cfg), sort_keys=False))
    write_model_file(policy.cfg, out_dir / MODEL_NAME)
    save_weights(policy, out_dir / WEIGHTS_NAME)
    return out_dir


def save_checkpoint(out_dir: str | Path, policy, optimizer, scaler, progress: Progress, train_cfg) -> Path:
    out_dir = Path(out_dir)
    save_model_dir(policy, out_dir / "model")
    save_config(train_cfg, out_dir / "train_config.yaml")
    ts = out_dir / "training_state"
    ts.mkdir(parents=True, exist_ok=True)
    (ts / "progress.json").write_text(progress.to_json())
    torch.save({"optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None}, ts / "optimizer.pt")
    torch.save(rng_state(), ts / "rng.pt")
    return out_dir


def load_checkpoint(ckpt_dir: str | Path, policy, optimizer, scaler) -> Progress:
    """Restore weights (strictly), optimizer, scaler and RNG states; return the Progress to continue from."""
    ckpt_dir = Path(ckpt_dir)
    state_dict = torch.load(ckpt_dir / "model" / WEIGHTS_NAME, map_location="cpu", weights_only=True)
    policy.load_state_dict(state_dict, strict=True)
    ts = ckpt_dir / "training_state"
    opt = torch.load(ts / "optimizer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(opt["optimizer"])
    if scaler is not None and opt.get("scaler") is not None:
        scaler.load_state_dict(opt["scaler"])
    set_rng_state(torch.load(ts / "rng.pt", weights_only=False))
    return Progress.from_json((ts / "progress.json").read_text())


def export_weights(policy, dest: str) -> str:
    """Write original-layout weights to a local path or a URI (`s3://...`, via pyarrow.fs)."""
    from steve1_ray.models.formats import save_weights

    if not is_uri(dest):
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{dest}.tmp{os.getpid()}"
        save_weights(policy, tmp)
        os.replace(tmp, dest)  # readers never see a half-written file
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(dest))
        save_weights(policy, local)
        copy_to_uri(local, dest)
    return dest


def copy_to_uri(local: str, dest: str) -> None:
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(dest)
    fs.create_dir(os.path.dirname(path), recursive=True)
    with open(local, "rb") as src, fs.open_output_stream(path) as out:
        shutil.copyfileobj(src, out)


def sibling_weights(out_weights: str, tag: str) -> str:
    """`.../steve1.weights` + `best` -> `.../steve1_best.weights` (the original's naming)."""
    stem, ext = os.path.splitext(out_weights)
    return f"{stem}_{tag}{ext or '.weights'}"
