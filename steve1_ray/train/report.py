"""What the training loop tells people and Ray: rank 0's `RunLog` (TensorBoard, metrics.jsonl, console lines,
and the numbers of the driver's progress lines), `TrainMetrics` (train/* every `log_every_steps` steps, with the
ETA) and `run_metrics` (what each `ray.train.report` carries)."""
from __future__ import annotations

import json
import math
import os
import resource
import sys
import time

import torch

from steve1_ray.progress import duration, seconds_left
from steve1_ray.train.checkpoint import Progress, kernels_note
from steve1_ray.train.config import TrainConfig, is_uri
from steve1_ray.train.validate import all_reduce_sum

NO_TRAIN_METRICS = {"train/loss": float("nan"), "train/nll": float("nan")}


def run_metrics(progress: Progress, train: dict, extra: dict) -> dict:
    """The metrics of one `ray.train.report`: the last train/* values, val/loss (inf before the first validation,
    so Ray's checkpoint scoring has a number), val/best_loss, frames, steps, epoch, then `extra`."""
    return {**train, "val/loss": progress.last_val_loss if math.isfinite(progress.last_val_loss) else float("inf"),
            "val/best_loss": progress.best_val_loss, "frames": progress.frames, "steps": progress.steps,
            "epoch": progress.epoch, "skipped_steps": progress.skipped_steps, **extra}


class RunLog:
    """Rank 0's TensorBoard writer, metrics.jsonl and console progress line (no-ops on other ranks).

    `sink`: the driver's progress box (train/run.py), an actor with `put(numbers: dict)`, or None. The console
    lines stay in the worker's log (the driver may not show workers' output); the numbers go to the driver."""

    def __init__(self, cfg: TrainConfig, enabled: bool, purge_step: int | None, sink=None):
        self.cfg, self.enabled, self.writer, self.jsonl, self.sink = cfg, enabled, None, None, sink
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        tb_dir = cfg.resolved_tensorboard_dir()
        self.writer = SummaryWriter(tb_dir, purge_step=purge_step)
        self.jsonl_path = os.path.join(tb_dir, "metrics.jsonl")
        self.t_start = time.time()

    def scalars(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(k, v, step)
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        self.writer.flush()

    def sync_to_storage(self) -> None:
        """With remote storage (s3://...), copy the event files next to the checkpoints."""
        if not self.enabled or not is_uri(self.cfg.storage_path) or self.cfg.tensorboard_dir:
            return
        import pyarrow.fs as pafs

        self.writer.flush()
        fs, path = pafs.FileSystem.from_uri(self.cfg.run_dir() + "/tensorboard")
        try:
            pafs.copy_files(self.writer.log_dir, path, destination_filesystem=fs)
        except OSError as e:  # logs are not worth failing a run over
            print(f"warning: could not copy TensorBoard logs to {self.cfg.run_dir()}: {e}", file=sys.stderr)

    def progress(self, **numbers) -> None:
        """Send `numbers` to the driver's progress lines, without waiting (a no-op when nobody listens)."""
        if self.enabled and self.sink is not None:
            self.sink.put.remote(numbers)

    def line(self, text: str) -> None:
        if self.enabled:  # not print(): Ray Train's print patch would show each line twice in job logs
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def start(self, progress: Progress, resumed: bool, train_set, val_set, policy, world: int, device) -> None:
        """The two lines a run starts with: where it starts from, and what it trains on."""
        n_params = sum(p.numel() for p in policy.parameters() if p.requires_grad)
        kernels = torch.backends.cpu.get_cpu_capability()
        self.line(("resumed from checkpoint: " if resumed else "starting: ") + f"{progress.frames:,} frames, "
                  f"step {progress.steps}, epoch {progress.epoch} group {progress.group}; CPU kernels {kernels}")
        note = kernels_note(progress.cpu_kernels, kernels) if resumed and device.type == "cpu" else None
        if note:
            self.line(note)
        self.line(f"{len(train_set)} train sequences ({train_set.n_frames:,} frames), {len(val_set)} val sequences; "
                  f"{n_params / 1e6:.2f}M trainable parameters; {world} worker(s) on {device}; "
                  f"{self.cfg.frames_per_step:,} frames per optimizer step")
        if self.cfg.free_play:
            share = train_set.free_play_share * train_set.p_uncond_free
            self.line(f"zero goal on free play only: {train_set.free_play_share:.0%} of the train sequences are free "
                      f"play ({len(train_set.tasks)} task episodes), each unconditioned with probability "
                      f"{train_set.p_uncond_free:.2f}: {share:.1%} of all"
                      + ("" if share >= self.cfg.p_uncond - 1e-9 else
                         f", capped below p_uncond={self.cfg.p_uncond}: too little free play"))

    def validation(self, val: dict, progress: Progress, improved: bool, t_start: float) -> None:
        """val/* scalars and the validation line (`t_start`: when the validation began)."""
        self.scalars({**val, "val/best_loss": progress.best_val_loss}, progress.steps)
        self.line(f"validation at step {progress.steps}: loss {val['val/loss']:.4f} nll/frame "
                  f"{val['val/nll']:.4f} ({val['val/sequences']} sequences, {time.time() - t_start:.1f}s)"
                  + (" new best" if improved else f" (best {progress.best_val_loss:.4f})"))

    def close(self):
        if self.writer is not None:
            self.writer.close()


class TrainMetrics:
    """Sums of this worker's optimizer steps since the last log point. Every `log_every_steps` steps (on every
    rank: it all-reduces) they become train/loss, train/nll, train/lr, train/grad_norm, train/frames_per_s,
    train/frames, train/epoch and sys/*, written by `log` with the progress line and sent to the driver (with
    the first step's time too). `last` holds the latest train/loss and train/nll for `run_metrics`."""

    def __init__(self, cfg: TrainConfig, log: RunLog, device):
        self.cfg, self.log, self.device = cfg, log, device
        self.last = dict(NO_TRAIN_METRICS)

    def start(self, frames: int, setup=None) -> None:
        """Start the clocks (the ETA counts from here, from `frames` frames done); `setup` (loop.SetupClock):
        the worker's setup phases, sent with the first step's time."""
        self._reset()
        self.t_run, self.frames_at_start, self.first_step = time.time(), frames, True
        self.setup = setup

    def _reset(self) -> None:
        self.loss, self.nll, self.frames, self.steps, self.t = 0.0, 0.0, 0, 0, time.time()

    def step(self, out: dict, progress: Progress, lr: float, epoch: float) -> None:
        """Add one `optimizer_step` result (after `progress` counted it); `epoch`: fractional epoch."""
        if not out.get("skipped"):  # a skipped (non-finite) step adds nothing to the means
            self.loss += out["loss_sum"]
            self.nll += out["nll_sum"]
            self.frames += out["frames"]
            self.steps += 1
        if self.first_step:  # how long the start took: the driver names it once
            self.first_step = False
            now = time.time()
            setup = {} if self.setup is None else {"setup_s": dict(self.setup.phases), "worker_s": now - self.setup.t0,
                                                    "workers": self.cfg.num_workers}
            self.log.progress(first_step_s=now - self.t_run, steps=progress.steps, **setup)
        if progress.steps % self.cfg.log_every_steps != 0:
            return
        sums = all_reduce_sum(torch.tensor([self.loss, self.nll, self.frames, self.steps], dtype=torch.float64))
        dt = max(time.time() - self.t, 1e-9)
        nan = float("nan")
        self.last = {"train/loss": float(sums[0] / sums[3]) if sums[3] else nan,
                     "train/nll": float(sums[1] / sums[2]) if sums[2] else nan}
        metrics = {**self.last, "train/lr": lr, "train/grad_norm": out["grad_norm"],
                   "train/skipped_steps": progress.skipped_steps,
                   "train/frames_per_s": float(sums[2]) / dt, "train/frames": progress.frames,
                   "train/epoch": epoch, **memory_gb(self.device)}
        self.log.scalars(metrics, progress.steps)
        cfg = self.cfg
        left = seconds_left(progress.frames, cfg.n_frames, time.time() - self.t_run, self.frames_at_start)
        self.log.line(f"step {progress.steps} | frames {progress.frames:,}/{cfg.n_frames:,} "
                      f"({100 * progress.frames / cfg.n_frames:.1f}%) | loss {self.last['train/loss']:.4f} | "
                      f"nll/frame {self.last['train/nll']:.4f} | lr {lr:.2e} | grad_norm "
                      f"{out['grad_norm']:.3f} | {metrics['train/frames_per_s']:,.0f} frames/s | eta "
                      f"{duration(left)}" + (f" | {progress.skipped_steps} non-finite steps skipped"
                                             if progress.skipped_steps else ""))
        self.log.progress(steps=progress.steps, frames=progress.frames, loss=self.last["train/loss"],
                          val_loss=progress.last_val_loss, frames_per_s=metrics["train/frames_per_s"], eta_s=left)
        self._reset()


def memory_gb(device) -> dict:
    out = {"sys/rss_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}
    if device.type == "cuda":
        out["sys/cuda_peak_gb"] = torch.cuda.max_memory_allocated(device) / 1024**3
    return out
