"""The STEVE-1 behaviour-cloning loop that runs on every Ray Train worker: `train_loop_per_worker(config)`.

Setup → resume → for each group of micro-batches: for each trunc_t piece: one optimizer step → log /
validate / checkpoint / snapshot at group boundaries → final validation and export.

One group = `grad_accum` micro-batches of `batch_size` T-frame sequences per worker. The pieces
[t0, t0 + trunc_t) are processed in order; for each piece every micro-batch runs forward and backward
with its own recurrent state (carried from the previous piece, detached), and then the summed gradient
makes one AdamW step. So an optimizer step sees the gradient of `batch_size * grad_accum * num_workers`
sequences, exactly as a batch that large would (tested), and `frames_per_step = trunc_t * B * accum * W`.
(The original zeroed gradients on every piece, so its accumulation never accumulated; see docs/training.md.)
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from steve1_ray.config import from_dict
from steve1_ray.train.checkpoint import (Progress, export_weights, load_checkpoint, save_checkpoint,
                                         sibling_weights)
from steve1_ray.train.config import TrainConfig, is_uri
from steve1_ray.train.data import MultiSource, Prefetcher, SequenceDataset, epoch_groups, hash_split, val_batches
from steve1_ray.train.optim import build_optimizer, enable_activation_checkpointing, freeze_parts
from steve1_ray.train.schedule import lr_at


# ------------------------------------------------------------------------------------------------------
# Helpers the loop names
# ------------------------------------------------------------------------------------------------------
def open_dataset(cfg: TrainConfig):
    """(source, train episode keys, val episode keys) from `cfg.sampling` files or the dataset at `cfg.data`."""
    if cfg.sampling:
        from steve1_ray.data.sampling import read_sampling

        splits = [read_sampling(cfg.sampling_dir, cfg.sampling, split) for split in ("train", "val")]
        if any(not root for split in splits for root, _ in split) and not cfg.data:
            raise ValueError(f"sampling {cfg.sampling!r} does not name its dataset: pass data=<shard dataset>")
        roots = sorted({root or cfg.data for split in splits for root, _ in split})
        source = MultiSource(roots)
        train_ids, val_ids = ([MultiSource.key(root or cfg.data, eid) for root, eid in split] for split in splits)
        return source, train_ids, val_ids
    if not cfg.data:
        raise ValueError("data is not set: pass data=<shard dataset folder> (written by `steve1 dataset`) "
                         "or sampling=<name> (written by `steve1 sampling`)")
    source = MultiSource([cfg.data])
    if not source.episode_ids():
        raise ValueError(f"data={cfg.data!r} has no finished episodes: point it at a dataset written by "
                         f"`steve1 dataset`")
    train_ids, val_ids = hash_split(sorted(source.episode_ids()), cfg.val_fraction)
    return source, train_ids, val_ids


def make_policy(cfg: TrainConfig, embed_dim: int | None):
    """The policy from `cfg.model` (+ `cfg.in_weights`), its goal layer sized for the data's embeddings."""
    from steve1_ray.models.policy import PRESETS, load_policy

    overrides = {}
    if cfg.model in PRESETS and embed_dim is not None:  # a .model file fixes its own goal width
        overrides["embed_dim"] = embed_dim
    if cfg.in_weights is not None and "://" not in cfg.in_weights and not Path(cfg.in_weights).is_file():
        raise FileNotFoundError(f"in_weights={cfg.in_weights!r} does not exist: give the path of a VPT "
                                f"(rl-from-foundation-2x.weights) or STEVE-1 (steve1.weights) file, or in_weights=null")
    policy = load_policy(cfg.model, cfg.in_weights, **overrides)
    report = getattr(policy, "load_report", None)
    if report is not None and report.missing_goal_layer:
        print(f"{cfg.in_weights}: no goal layer (a VPT file); net.mineclip_embed_linear starts fresh", flush=True)
    if embed_dim is not None and policy.cfg.embed_dim != embed_dim:
        raise ValueError(f"the dataset's goal embeddings have {embed_dim} dims but model={cfg.model!r} "
                         f"expects {policy.cfg.embed_dim}: embed the data with the matching embedder")
    return policy


def autocast(cfg: TrainConfig, device: torch.device):
    if cfg.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def piece_loss(log_probs: dict, buttons: torch.Tensor, camera: torch.Tensor, reduction: str):
    """(objective, summed NLL, frames) of one piece. `sum_time` is STEVE-1's: −mean_b Σ_t log p(a_t)."""
    from steve1_ray.models.policy import logprob

    lp = logprob(log_probs, buttons, camera)                     # (B, t) float32
    loss = -lp.sum(1).mean() if reduction == "sum_time" else -lp.mean()
    return loss, -lp.detach().sum(), lp.numel()


def _piece(batch: dict, t0: int, t1: int, device) -> tuple:
    return (batch["img"][:, t0:t1].to(device, non_blocking=True),          # (B, t, 128, 128, 3) uint8
            batch["goal_embed"][:, t0:t1].to(device, non_blocking=True),   # (B, t, D) float32
            batch["first"][:, t0:t1].to(device),                           # (B, t) bool
            batch["buttons"][:, t0:t1].to(device), batch["camera"][:, t0:t1].to(device))


def optimizer_step(model, policy, optimizer, scaler, micro_batches: list[dict], states: list, t0: int,
                   cfg: TrainConfig, device, lr: float) -> dict:
    """One AdamW step on piece [t0, t0 + trunc_t) of every micro-batch; updates `states` in place.

    The gradient is the mean over all sequences of all micro-batches (and, through DDP, all workers).
    Returns this worker's sums for logging and the (global) gradient norm before clipping.
    """
    from steve1_ray.models.policy import detach_state

    for group in optimizer.param_groups:
        group["lr"] = lr
    n = len(micro_batches)
    loss_sum, nll_sum, frames = 0.0, 0.0, 0
    for m, batch in enumerate(micro_batches):
        img, goal, first, buttons, camera = _piece(batch, t0, t0 + cfg.trunc_t, device)
        sync = m == n - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            with autocast(cfg, device):
                log_probs, new_state = model(img, goal, first, states[m])
            loss, nll, count = piece_loss(log_probs, buttons, camera, cfg.loss_reduction)
            scaled = loss / n
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        states[m] = detach_state(new_state)
        loss_sum += float(loss.detach())
        nll_sum += float(nll)
        frames += count
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss_sum": loss_sum / n, "nll_sum": nll_sum, "frames": frames, "grad_norm": grad_norm}


@torch.no_grad()
def validate(policy, val_set: SequenceDataset, cfg: TrainConfig, rank: int, world: int, device) -> dict:
    """Mean objective and per-frame NLL over the fixed-relabeling val set, the same for any worker count."""
    from steve1_ray.models.policy import logprob

    was_training = policy.training
    policy.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # objective sum, pieces x rows, nll sum, frames
    loader = Prefetcher(val_set, cfg.loader_threads, cfg.prefetch_batches)
    try:
        for batch in loader.iter_batches(val_batches(len(val_set), rank, world, cfg.batch_size,
                                                     cfg.val_max_sequences), epoch=0):
            b = batch["img"].shape[0]
            state = policy.initial_state(b, device=device)
            for t0 in range(0, cfg.T, cfg.trunc_t):
                img, goal, first, buttons, camera = _piece(batch, t0, t0 + cfg.trunc_t, device)
                with autocast(cfg, device):
                    log_probs, state = policy(img, goal, first, state)
                nll = -logprob(log_probs, buttons, camera).double()     # (B, t)
                per_row = nll.sum(1) if cfg.loss_reduction == "sum_time" else nll.mean(1)
                sums += torch.stack([per_row.sum().cpu(), torch.tensor(float(b), dtype=torch.float64),
                                     nll.sum().cpu(), torch.tensor(float(nll.numel()), dtype=torch.float64)])
    finally:
        loader.close()
    sums = all_reduce_sum(sums)
    policy.train(was_training)
    if sums[1] == 0:
        return {"val/loss": float("inf"), "val/nll": float("inf"), "val/sequences": 0}
    return {"val/loss": float(sums[0] / sums[1]), "val/nll": float(sums[2] / sums[3]),
            "val/sequences": int(sums[3]) // cfg.T}


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def memory_gb(device) -> dict:
    out = {"sys/rss_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}
    if device.type == "cuda":
        out["sys/cuda_peak_gb"] = torch.cuda.max_memory_allocated(device) / 1024**3
    return out


class RunLog:
    """Rank 0's TensorBoard writer, metrics.jsonl and console progress line (no-ops on other ranks)."""

    def __init__(self, cfg: TrainConfig, enabled: bool, purge_step: int | None):
        self.cfg, self.enabled, self.writer, self.jsonl = cfg, enabled, None, None
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

    def line(self, text: str) -> None:
        if self.enabled:  # not print(): Ray Train's print patch would show each line twice in job logs
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


def _crossed(before: int, after: int, every: int) -> bool:
    return before // every != after // every


def _eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


# ------------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------------
def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg = from_dict(TrainConfig, config) if isinstance(config, dict) else config
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if world > 1 or cfg.use_gpu else torch.device("cpu")
    is_main = rank == 0
    torch.manual_seed(cfg.seed)  # same initial weights on every worker (DDP also broadcasts rank 0's)

    # ---- data -------------------------------------------------------------------------------------
    source, train_ids, val_ids = open_dataset(cfg)
    embed_dim = source.embeds(train_ids[0])[0].shape[1] if train_ids else None
    train_set = SequenceDataset(source, train_ids, cfg.T, cfg.min_btwn_goals, cfg.max_btwn_goals,
                                cfg.p_uncond, seed=cfg.seed, event_horizon=cfg.goal_event_horizon,
                                event_pick=cfg.goal_event_pick)
    val_set = SequenceDataset(source, val_ids, cfg.T, cfg.min_btwn_goals, cfg.max_btwn_goals,
                              cfg.p_uncond, seed=cfg.val_seed, event_horizon=cfg.goal_event_horizon,
                              event_pick=cfg.goal_event_pick)
    if len(train_set) < cfg.sequences_per_group:
        raise ValueError(
            f"{len(train_set)} training sequences of T={cfg.T} frames (from {len(train_ids)} episodes, "
            f"{len(train_set.skipped)} too short) but one step needs batch_size*grad_accum*num_workers = "
            f"{cfg.sequences_per_group}: lower T, batch_size, grad_accum or num_workers, or add data")

    # ---- model, optimizer, resume -----------------------------------------------------------------
    policy = make_policy(cfg, embed_dim)
    freeze_parts(policy, cfg.freeze_prefixes)
    if cfg.activation_checkpointing:
        policy.set_activation_checkpointing(True)
        enable_activation_checkpointing(policy, [n for n, _ in policy.named_modules()
                                                 if n.startswith("net.img_process.cnn.stacks.")
                                                 and n.count(".") == 4])
    policy.to(device).train()
    optimizer = build_optimizer(policy, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    progress = Progress(next_snapshot_frames=cfg.snapshot_every_frames)
    local_mode = cfg.num_workers == 0 and not is_uri(cfg.storage_path)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and local_mode:
        checkpoint = latest_local_checkpoint(cfg)
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            progress = load_checkpoint(ckpt_dir, policy, optimizer, scaler)
        progress.attempt += 1
    model = policy
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            policy, device_ids=[device.index] if device.type == "cuda" else None)

    log = RunLog(cfg, is_main, purge_step=progress.steps if checkpoint is not None else None)
    out_weights = cfg.resolved_out_weights()
    n_params = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    log.line(("resumed from checkpoint: " if checkpoint is not None else "starting: ")
             + f"{progress.frames:,} frames, step {progress.steps}, epoch {progress.epoch} group {progress.group}")
    log.line(f"{len(train_set)} train sequences ({train_set.n_frames:,} frames), {len(val_set)} val sequences; "
             f"{n_params / 1e6:.2f}M trainable parameters; {world} worker(s) on {device}; "
             f"{cfg.frames_per_step:,} frames per optimizer step")

    # ---- the reporting helper: every rank calls report at the same points -------------------------
    last_train = {"train/loss": float("nan"), "train/nll": float("nan")}
    checkpointed = {"steps": None}  # step of the last report that carried a checkpoint

    def report(extra: dict, with_checkpoint: bool) -> None:
        metrics = {**last_train, "val/loss": progress.last_val_loss if math.isfinite(progress.last_val_loss)
                   else float("inf"), "val/best_loss": progress.best_val_loss, "frames": progress.frames,
                   "steps": progress.steps, "epoch": progress.epoch, **extra}
        if not with_checkpoint:
            ray.train.report(metrics)
            return
        checkpointed["steps"] = progress.steps
        if local_mode:  # Ray does not persist local-mode checkpoints: keep them under the run dir
            ckpt_dir = save_checkpoint(local_checkpoint_dir(cfg, progress.steps), policy, optimizer, scaler,
                                       progress, cfg)
            prune_local_checkpoints(cfg)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(ckpt_dir)))
            return
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if is_main:
                save_checkpoint(tmp, policy, optimizer, scaler, progress, cfg)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
                log.sync_to_storage()
            ray.train.report(metrics, checkpoint=ckpt)

    def run_validation() -> dict:
        if len(val_set) == 0:
            return {}
        t = time.time()
        val = validate(policy, val_set, cfg, rank, world, device)
        progress.last_val_loss = val["val/loss"]
        improved = val["val/loss"] < progress.best_val_loss
        if improved:
            progress.best_val_loss, progress.vals_since_best = val["val/loss"], 0
            if is_main:
                export_weights(policy, sibling_weights(out_weights, "best"))
                _write_json(sibling_weights(out_weights, "best").replace(".weights", ".json"),
                            {"best_val_loss": val["val/loss"], "steps": progress.steps,
                             "frames": progress.frames, "epoch": progress.epoch})
        else:
            progress.vals_since_best += 1
        log.scalars({**val, "val/best_loss": progress.best_val_loss}, progress.steps)
        log.line(f"validation at step {progress.steps}: loss {val['val/loss']:.4f} nll/frame "
                 f"{val['val/nll']:.4f} ({val['val/sequences']} sequences, {time.time() - t:.1f}s)"
                 + (" new best" if improved else f" (best {progress.best_val_loss:.4f})"))
        return {**val, "val/improved": float(improved)}

    if cfg.val_at_start and progress.steps == 0 and checkpoint is None:
        report(run_validation(), with_checkpoint=False)

    # ---- train ------------------------------------------------------------------------------------
    loader = Prefetcher(train_set, cfg.loader_threads, cfg.prefetch_batches)
    window = {"loss": 0.0, "nll": 0.0, "frames": 0, "steps": 0, "t": time.time()}
    t_run, frames_at_start = time.time(), progress.frames
    stop_reason = None
    while stop_reason is None:
        epoch = progress.epoch
        groups = epoch_groups(len(train_set), cfg.seed, epoch, rank, world, cfg.batch_size, cfg.grad_accum)
        batches = loader.iter_batches([b for g in groups[progress.group:] for b in g], epoch)
        for g in range(progress.group, len(groups)):
            micro_batches = [next(batches) for _ in range(cfg.grad_accum)]
            states = [policy.initial_state(mb["img"].shape[0], device=device) for mb in micro_batches]
            steps_before = progress.steps
            for t0 in range(0, cfg.T, cfg.trunc_t):
                lr = lr_at(progress.frames, cfg.lr, cfg.warmup_frames, cfg.n_frames, cfg.decay_frames_factor)
                out = optimizer_step(model, policy, optimizer, scaler, micro_batches, states, t0, cfg, device, lr)
                progress.frames += cfg.frames_per_step
                progress.steps += 1
                window["loss"] += out["loss_sum"]
                window["nll"] += out["nll_sum"]
                window["frames"] += out["frames"]
                window["steps"] += 1
                if progress.steps % cfg.log_every_steps == 0:
                    sums = all_reduce_sum(torch.tensor([window["loss"], window["nll"], window["frames"],
                                                        window["steps"]], dtype=torch.float64))
                    dt = max(time.time() - window["t"], 1e-9)
                    last_train = {"train/loss": float(sums[0] / sums[3]), "train/nll": float(sums[1] / sums[2])}
                    metrics = {**last_train, "train/lr": lr, "train/grad_norm": out["grad_norm"],
                               "train/frames_per_s": float(sums[2]) / dt, "train/frames": progress.frames,
                               "train/epoch": epoch + g / len(groups), **memory_gb(device)}
                    log.scalars(metrics, progress.steps)
                    rate = (progress.frames - frames_at_start) / max(time.time() - t_run, 1e-9)
                    log.line(f"step {progress.steps} | frames {progress.frames:,}/{cfg.n_frames:,} "
                             f"({100 * progress.frames / cfg.n_frames:.1f}%) | loss {last_train['train/loss']:.4f} | "
                             f"nll/frame {last_train['train/nll']:.4f} | lr {lr:.2e} | grad_norm "
                             f"{out['grad_norm']:.3f} | {metrics['train/frames_per_s']:,.0f} frames/s | eta "
                             f"{_eta((cfg.n_frames - progress.frames) / rate if rate > 0 else float('nan'))}")
                    window = {"loss": 0.0, "nll": 0.0, "frames": 0, "steps": 0, "t": time.time()}
                _maybe_fail(cfg, progress, rank, world, checkpointed["steps"])
                if progress.frames >= cfg.n_frames:
                    stop_reason = "n_frames reached"
                    break
            # data position of the next group (what a checkpoint written now resumes from)
            progress.epoch, progress.group = (epoch, g + 1) if g + 1 < len(groups) else (epoch + 1, 0)
            if stop_reason:
                break

            # ---- group boundary: snapshot, validation, checkpoint, early stopping -----------------
            if cfg.snapshot_every_frames and progress.frames >= progress.next_snapshot_frames:
                if is_main:
                    export_weights(policy, sibling_weights(out_weights, f"snapshot_{progress.frames}"))
                while progress.next_snapshot_frames <= progress.frames:
                    progress.next_snapshot_frames += cfg.snapshot_every_frames
            val = run_validation() if _crossed(steps_before, progress.steps, cfg.val_every_steps) else {}
            if cfg.patience and progress.vals_since_best >= cfg.patience:
                stop_reason = f"early stopping: no better val/loss in {cfg.patience} validations"
            if cfg.stop_after_steps and progress.steps >= cfg.stop_after_steps:
                stop_reason = f"stop_after_steps={cfg.stop_after_steps} (rerun with the same run_name to resume)"
            ckpt_due = bool(_crossed(steps_before, progress.steps, cfg.checkpoint_every_steps)
                            or val.get("val/improved") or stop_reason)
            if val or ckpt_due:
                report(val, with_checkpoint=ckpt_due)
            if stop_reason:
                break
    loader.close()

    # ---- finish: final validation, export, last checkpoint ------------------------------------------
    if cfg.stop_after_steps and stop_reason.startswith("stop_after_steps"):
        log.line(f"paused ({stop_reason}): {progress.frames:,} frames, {progress.steps} steps")
        log.close()
        return
    val = run_validation()
    if is_main:
        export_weights(policy, out_weights)
    log.line(f"done ({stop_reason}): {progress.frames:,} frames, {progress.steps} steps; weights -> {out_weights}")
    report({**val, "done": 1.0}, with_checkpoint=True)
    log.close()


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
    import shutil

    for old in _local_checkpoints(cfg)[:-cfg.num_to_keep]:
        shutil.rmtree(old, ignore_errors=True)


def _maybe_fail(cfg: TrainConfig, progress: Progress, rank: int, world: int, checkpoint_steps: int | None) -> None:
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


def _write_json(path: str, data: dict) -> None:
    if is_uri(path):
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "x.json")
            Path(local).write_text(json.dumps(data, indent=1))
            from steve1_ray.train.checkpoint import copy_to_uri

            copy_to_uri(local, path)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1))
