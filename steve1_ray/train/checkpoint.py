"""Training checkpoints: what serving needs (`model/`) apart from what resuming needs (`training_state/`).

    <ckpt>/model/config.yaml        PolicyConfig (readable)
    <ckpt>/model/policy.model       the architecture as an original `.model` pickle
    <ckpt>/model/steve1.weights     weights in the original layout (no prefix; loads in STEVE-1's code)
    <ckpt>/train_config.yaml        the resolved TrainConfig of the run
    <ckpt>/training_state/progress.json   frames, steps, epoch, group (data position), best val loss, ...
    <ckpt>/training_state/optimizer.pt    AdamW state (+ GradScaler state)
    <ckpt>/training_state/rng.pt          torch / numpy / python RNG states of rank 0

`steve1_ray.load_policy(ckpt/"model/policy.model", ckpt/"model/steve1.weights")` rebuilds the policy.

Under Ray Train, `RunCheckpoints` finds the checkpoint to resume from and hands new ones to Ray; beside the
final weights go `<stem>_best.weights` (+ `.json`) and `<stem>_snapshot_<frames>.weights`. `maybe_fail` is the
fault injection the recovery test uses.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from steve1_ray.config import save_config
from steve1_ray.models.loading import MODEL_DIR, MODEL_NAME, WEIGHTS_NAME  # the checkpoint layout every loader reads
from steve1_ray.train.config import TrainConfig, is_uri


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
    skipped_steps: int = 0     # optimizer steps skipped for a non-finite loss or gradient norm
    nonfinite_in_a_row: int = 0
    cpu_kernels: str = ""      # torch's CPU kernels when the run last (re)started ("" in older checkpoints)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Progress":
        return cls(**json.loads(text))


def kernels_note(recorded: str, now: str) -> str | None:
    """The warning for a run resumed with other CPU kernels than it was trained with (`steve1_ray.numerics`): from
    there on it rounds differently, so it no longer repeats an uninterrupted run. None where nothing changed or the
    checkpoint does not say."""
    if not recorded or recorded == now:
        return None
    return (f"warning: this run last (re)started with torch's {recorded} CPU kernels and resumes with {now}: from "
            f"here its CPU operations round differently from an uninterrupted run's (resume on the same kind of CPU, "
            f"or with the cpu_isa= it was started with)")


class NonFiniteError(RuntimeError):
    """Training produced non-finite numbers too often (or into the weights); nothing non-finite is written."""


def check_finite(policy, what: str) -> None:
    """Refuse to write weights that hold NaN or inf (a checkpoint or an export would carry them on)."""
    bad = [name for name, p in policy.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteError(f"not writing {what}: {len(bad)} tensors hold NaN/inf (first: {bad[0]}); the last "
                             f"finite checkpoint stays the latest")


def rng_state() -> dict:
    """RNG states as tensors and plain Python values only, so they load with `torch.load(weights_only=True)`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                      int(has_gauss), float(gauss)],
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
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
    """Write the checkpoint into a temporary sibling folder, `progress.json` (the "complete" marker) last, then
    rename it into place: a crash mid-write leaves no folder that looks complete. Non-finite weights are refused."""
    check_finite(policy, f"checkpoint {out_dir}")
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_dir(policy, tmp / MODEL_DIR)
    save_config(train_cfg, tmp / "train_config.yaml")
    ts = tmp / "training_state"
    ts.mkdir(parents=True, exist_ok=True)
    torch.save({"optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None}, ts / "optimizer.pt")
    torch.save(rng_state(), ts / "rng.pt")
    (ts / "progress.json").write_text(progress.to_json())
    old = out_dir.with_name(f".{out_dir.name}.old{os.getpid()}")
    if out_dir.exists():  # an empty target (a TemporaryDirectory) or a copy of the same step: set it aside
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def load_checkpoint(ckpt_dir: str | Path, policy, optimizer, scaler) -> Progress:
    """Restore weights (strictly), optimizer, scaler and RNG states; return the Progress to continue from."""
    ckpt_dir = Path(ckpt_dir)
    state_dict = torch.load(ckpt_dir / MODEL_DIR / WEIGHTS_NAME, map_location="cpu", weights_only=True)
    policy.load_state_dict(state_dict, strict=True)
    ts = ckpt_dir / "training_state"
    # weights_only everywhere: a checkpoint on shared storage must not be able to run code when resumed
    opt = torch.load(ts / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(opt["optimizer"])
    if scaler is not None and opt.get("scaler") is not None:
        scaler.load_state_dict(opt["scaler"])
    try:
        set_rng_state(torch.load(ts / "rng.pt", weights_only=True))
    except pickle.UnpicklingError as exc:  # a checkpoint of an older version (numpy arrays), or a hostile file
        print(f"{ts / 'rng.pt'}: not restored, it holds more than tensors and plain values "
              f"({str(exc).splitlines()[0][:200]}); the run continues with fresh random states", flush=True)
    return Progress.from_json((ts / "progress.json").read_text())


def export_weights(policy, dest: str) -> str:
    """Write original-layout weights to a local path or a URI (`s3://...`, via pyarrow.fs)."""
    from steve1_ray.models.formats import save_weights

    check_finite(policy, dest)
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


def export_best(policy, out_weights: str, progress: Progress) -> None:
    """`<stem>_best.weights` and `<stem>_best.json` (best val loss, steps, frames, epoch) beside `out_weights`."""
    dest = sibling_weights(out_weights, "best")
    export_weights(policy, dest)
    _write_json(dest.replace(".weights", ".json"), {"best_val_loss": progress.best_val_loss, "steps": progress.steps,
                                                    "frames": progress.frames, "epoch": progress.epoch})


def _write_json(path: str, data: dict) -> None:
    if is_uri(path):
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "x.json")
            Path(local).write_text(json.dumps(data, indent=1))
            copy_to_uri(local, path)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1))


# ------------------------------------------------------------------------------------------------------
# Under Ray Train
# ------------------------------------------------------------------------------------------------------
class RunCheckpoints:
    """One worker's view of the run's checkpoints: `resume()` loads the latest one, `report(...)` hands
    metrics to Ray with or without a new one, `snapshot_if_due(progress)` exports snapshot weights.

    In local mode (`num_workers=0`, local storage) Ray does not persist checkpoints, so they are kept as
    `<run_dir>/checkpoints/checkpoint_step<steps>` (the newest `num_to_keep`) and resumed from there."""

    def __init__(self, cfg: TrainConfig, rank: int, policy, optimizer, scaler):
        self.cfg, self.is_main, self.policy, self.optimizer, self.scaler = cfg, rank == 0, policy, optimizer, scaler
        self.local_mode = cfg.num_workers == 0 and not is_uri(cfg.storage_path)
        self.last_steps: int | None = None
        """Step of the last report that carried a checkpoint (`maybe_fail` waits until Ray registered it)."""

    def resume(self) -> tuple[Progress, bool]:
        """(progress, resumed): the latest checkpoint's, loaded into policy, optimizer and scaler, or a fresh one."""
        import ray.train

        progress = Progress(next_snapshot_frames=self.cfg.snapshot_every_frames)
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None and self.local_mode:
            checkpoint = latest_local_checkpoint(self.cfg)
        if checkpoint is None:
            return progress, False
        with checkpoint.as_directory() as ckpt_dir:
            progress = load_checkpoint(ckpt_dir, self.policy, self.optimizer, self.scaler)
        progress.attempt += 1
        return progress, True

    def report(self, metrics: dict, progress: Progress, with_checkpoint: bool, before_upload=None) -> None:
        """`ray.train.report(metrics)`, with a checkpoint of now if `with_checkpoint` (every rank calls this at the
        same points; rank 0 writes the checkpoint and first calls `before_upload`, e.g. to sync the logs)."""
        import ray.train

        if not with_checkpoint:
            ray.train.report(metrics)
            return
        self.last_steps = progress.steps
        args = (self.policy, self.optimizer, self.scaler, progress, self.cfg)
        if self.local_mode:
            ckpt_dir = save_checkpoint(local_checkpoint_dir(self.cfg, progress.steps), *args)
            prune_local_checkpoints(self.cfg)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(ckpt_dir)))
            return
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if self.is_main:
                save_checkpoint(tmp, *args)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
                if before_upload is not None:
                    before_upload()
            ray.train.report(metrics, checkpoint=ckpt)

    def snapshot_if_due(self, progress: Progress) -> None:
        """Every `snapshot_every_frames` frames, `<stem>_snapshot_<frames>.weights` beside the final weights."""
        every = self.cfg.snapshot_every_frames
        if not every or progress.frames < progress.next_snapshot_frames:
            return
        if self.is_main:
            dest = sibling_weights(self.cfg.resolved_out_weights(), f"snapshot_{progress.frames}")
            export_weights(self.policy, dest)
        while progress.next_snapshot_frames <= progress.frames:
            progress.next_snapshot_frames += every


def local_checkpoint_dir(cfg: TrainConfig, steps: int) -> Path:
    return Path(cfg.run_dir()) / "checkpoints" / f"checkpoint_step{steps:09d}"


def _local_checkpoints(cfg: TrainConfig) -> list[Path]:
    root = Path(cfg.run_dir()) / "checkpoints"
    return sorted(p for p in root.glob("checkpoint_step*") if (p / "training_state" / "progress.json").exists())


def latest_local_checkpoint(cfg: TrainConfig):
    import ray.train

    found = _local_checkpoints(cfg)
    return ray.train.Checkpoint.from_directory(str(found[-1])) if found else None


def prune_local_checkpoints(cfg: TrainConfig) -> None:
    """Keep the newest `num_to_keep`; remove the hidden folders a crash mid-write left behind."""
    for old in _local_checkpoints(cfg)[:-cfg.num_to_keep]:
        shutil.rmtree(old, ignore_errors=True)
    root = Path(cfg.run_dir()) / "checkpoints"
    mine = (f".tmp{os.getpid()}", f".old{os.getpid()}")
    for left in root.glob(".checkpoint_step*"):
        if not left.name.endswith(mine):
            shutil.rmtree(left, ignore_errors=True)


def maybe_fail(cfg: TrainConfig, progress: Progress, rank: int, world: int, checkpoint_steps: int | None) -> None:
    """Testing aid: kill this worker process once, right after optimizer step `fail_at_step`.

    It first waits (up to 2 min) until the controller has registered the last checkpoint the workers reported
    (Ray's checkpoint_manager_snapshot.json), so the test is about recovery, not about that race."""
    if cfg.fail_at_step < 0 or progress.steps != cfg.fail_at_step or world < 2 or rank != 1:
        return
    if is_uri(cfg.storage_path):
        return
    marker = Path(cfg.run_dir()) / f".fail_injected_step{cfg.fail_at_step}"
    if marker.exists():
        return
    snapshot = Path(cfg.run_dir()) / "checkpoint_manager_snapshot.json"
    deadline = time.time() + 120
    while checkpoint_steps is not None and time.time() < deadline:
        try:
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}
            if latest.get("metrics", {}).get("steps", -1) >= checkpoint_steps:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("worker killed on purpose by fail_at_step\n")
    print(f"fail_at_step={cfg.fail_at_step}: killing worker rank {rank} (pid {os.getpid()})",
          file=sys.stderr, flush=True)
    os._exit(1)
