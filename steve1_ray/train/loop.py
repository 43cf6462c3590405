"""The STEVE-1 behaviour-cloning loop that runs on every Ray Train worker: `train_loop_per_worker(config)`.

Setup → resume → for each group of micro-batches: for each trunc_t piece: one optimizer step (`step.py`)
→ snapshot / validate (`validate.py`) / report and checkpoint (`report.py`, `checkpoint.py`) at group
boundaries → final validation and export.

One group = `grad_accum` micro-batches of `batch_size` T-frame sequences per worker, so an optimizer step
sees `batch_size * grad_accum * num_workers` sequences and `frames_per_step = trunc_t * B * accum * W`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from steve1_ray.config import from_dict
from steve1_ray.models.formats import load_policy
from steve1_ray.models.loading import local_copy
from steve1_ray.models.policy import PRESETS
from steve1_ray.train.checkpoint import NonFiniteError, Progress, RunCheckpoints, export_weights, maybe_fail
from steve1_ray.train.config import FREEZE_ALIASES, TrainConfig
from steve1_ray.train.data import (MultiSource, Prefetcher, SequenceDataset, epoch_groups, goal_balance_weights,
                                   hash_split, segment_goal_frames, task_keys)
from steve1_ray.train.optim import build_optimizer, enable_activation_checkpointing, freeze_parts
from steve1_ray.train.report import RunLog, TrainMetrics, run_metrics
from steve1_ray.train.schedule import lr_at
from steve1_ray.train.step import optimizer_step
from steve1_ray.train.validate import Validation

PROGRESS_SINK_KEY = "progress_sink"
"""the key of `train_loop_config` that carries the driver's progress box (an actor handle), if any"""


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    sink = None  # the driver's progress box (train/run.py), carried beside the config's fields
    if isinstance(config, dict):
        config = dict(config)
        sink = config.pop(PROGRESS_SINK_KEY, None)
    cfg = from_dict(TrainConfig, config) if isinstance(config, dict) else config
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if world > 1 or cfg.use_gpu else torch.device("cpu")
    torch.manual_seed(cfg.seed)  # same initial weights on every worker (DDP also broadcasts rank 0's)

    # ---- setup: data, model, optimizer; resume ------------------------------------------------------
    setup = SetupClock()  # where the time before the first step goes (the driver prints it)
    train_set, val_set, embed_dim = open_sequences(cfg)
    setup.mark("data")
    policy = prepare_policy(make_policy(cfg, embed_dim), cfg, device)
    optimizer = build_optimizer(policy, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps,
                                lr_scales={FREEZE_ALIASES["goal"]: cfg.goal_lr_scale})
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    setup.mark("model")
    checkpoints = RunCheckpoints(cfg, rank, policy, optimizer, scaler)
    progress, resumed = checkpoints.resume()
    null_axes = load_goal_axes(cfg.goal_null_axes, policy.cfg.embed_dim, device)
    if null_axes is not None:  # blind to them from the first step (a resumed run's weights already are)
        policy.null_goal_axes(null_axes)
    setup.mark("resume")
    model = distributed(policy, device) if world > 1 else policy
    if world > 1:
        setup.mark("ddp")
    log = RunLog(cfg, rank == 0, purge_step=progress.steps if resumed else None, sink=sink)
    log.start(progress, resumed, train_set, val_set, policy, world, device)
    progress.cpu_kernels = torch.backends.cpu.get_cpu_capability()  # what the checkpoints from here were made with
    validation = Validation(policy, val_set, cfg, rank, world, device, log)
    train_metrics = TrainMetrics(cfg, log, device)

    def report(extra: dict, with_checkpoint: bool) -> None:  # every rank reports at the same points
        damaged = {"data/corrupt_episodes": len(train_set.corrupt) + len(val_set.corrupt)}  # skipped, this worker
        checkpoints.report(run_metrics(progress, train_metrics.last, {**damaged, **extra}), progress,
                           with_checkpoint, before_upload=log.sync_to_storage)

    if cfg.val_at_start and progress.steps == 0 and not resumed:
        report(validation(progress), with_checkpoint=False)
    setup.mark("validation" if cfg.val_at_start and not resumed else "logs")  # with the run log's set-up

    # ---- train --------------------------------------------------------------------------------------
    loader = Prefetcher(train_set, cfg.loader_threads, cfg.prefetch_batches)
    train_metrics.start(progress.frames, setup)
    for epoch, g, n_groups, micro_batches in groups_from(progress, loader, len(train_set), cfg, rank, world):
        states = [policy.initial_state(mb["img"].shape[0], device=device) for mb in micro_batches]
        steps_before = progress.steps
        for t0 in range(0, cfg.T, cfg.trunc_t):
            lr = lr_at(progress.frames, cfg.lr, cfg.warmup_frames, cfg.n_frames, cfg.decay_frames_factor)
            out = optimizer_step(model, policy, optimizer, scaler, micro_batches, states, t0, cfg, device, lr)
            if null_axes is not None and not out["skipped"]:  # AdamW's step leaves the subspace: project back
                policy.null_goal_axes(null_axes)
            progress.frames += cfg.frames_per_step
            progress.steps += 1
            count_nonfinite(out, progress, cfg, rank)
            train_metrics.step(out, progress, lr, epoch=epoch + g / n_groups)
            maybe_fail(cfg, progress, rank, world, checkpoints.last_steps)
            if progress.frames >= cfg.n_frames:
                break
        # data position of the next group (what a checkpoint written now resumes from)
        progress.epoch, progress.group = (epoch, g + 1) if g + 1 < n_groups else (epoch + 1, 0)
        if progress.frames >= cfg.n_frames:
            stop_reason = "n_frames reached"
            break
        # ---- group boundary: snapshot, validation, early stopping, checkpoint ---------------------------
        checkpoints.snapshot_if_due(progress)
        val = validation(progress) if _crossed(steps_before, progress.steps, cfg.val_every_steps) else {}
        stop_reason = early_stop_reason(cfg, progress)
        ckpt_due = bool(_crossed(steps_before, progress.steps, cfg.checkpoint_every_steps)
                        or val.get("val/improved") or stop_reason)
        if val or ckpt_due:
            report(val, with_checkpoint=ckpt_due)
        if stop_reason:
            break
    loader.close()

    # ---- finish: final validation, export, last checkpoint ------------------------------------------
    if stop_reason.startswith("stop_after_steps"):
        log.line(f"paused ({stop_reason}): {progress.frames:,} frames, {progress.steps} steps")
    else:
        val = validation(progress)
        if rank == 0:
            export_weights(policy, cfg.resolved_out_weights())
        log.line(f"done ({stop_reason}): {progress.frames:,} frames, {progress.steps} steps; "
                 f"weights -> {cfg.resolved_out_weights()}")
        report({**val, "done": 1.0}, with_checkpoint=True)
    log.close()


# ------------------------------------------------------------------------------------------------------
# Helpers the loop names
# ------------------------------------------------------------------------------------------------------
class SetupClock:
    """Seconds each setup phase of a worker took, from the loop's entry (`mark(name)` ends a phase); the first
    step's report carries them, so `steve1 train` says where its start-up went (train/run.py)."""

    def __init__(self):
        self.t0 = self.t = time.time()
        self.phases: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.time()
        self.phases[name] = now - self.t
        self.t = now


def count_nonfinite(out: dict, progress: Progress, cfg: TrainConfig, rank: int) -> None:
    """Count a skipped (non-finite) step; `max_nonfinite_steps` in a row stop the run on every rank (they agree
    on every skip, `step.all_finite`). The weights were left untouched, so the last checkpoint stays good."""
    if not out.get("skipped"):
        progress.nonfinite_in_a_row = 0
        return
    progress.skipped_steps += 1
    if out.get("overflow"):  # fp16 loss-scale overflow: GradScaler lowers its scale and goes on
        return
    progress.nonfinite_in_a_row += 1
    if rank == 0:
        print(f"step {progress.steps}: non-finite loss or gradient norm (grad_norm {out['grad_norm']}); update "
              f"skipped ({progress.nonfinite_in_a_row} in a row, {progress.skipped_steps} in all)", flush=True)
    if progress.nonfinite_in_a_row >= cfg.max_nonfinite_steps:
        raise NonFiniteError(
            f"{progress.nonfinite_in_a_row} optimizer steps in a row had a non-finite loss or gradient norm (at "
            f"step {progress.steps}, max_nonfinite_steps={cfg.max_nonfinite_steps}): lower lr, train in fp32, or "
            f"check the data for NaN/inf (goal embeddings); nothing non-finite was written")


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


def open_sequences(cfg: TrainConfig) -> tuple[SequenceDataset, SequenceDataset, int | None]:
    """(train set, val set, goal embedding width) of relabeled T-frame sequences; the val set uses `val_seed`."""
    source, train_ids, val_ids = open_dataset(cfg)
    embed_dim = source.embeds(train_ids[0])[0].shape[1] if train_ids else None

    tasks = task_keys(cfg.free_play, train_ids + val_ids) if cfg.free_play else frozenset()
    names: dict = {}
    segments = segment_goal_frames(cfg.goal_segments, train_ids + val_ids, names) if cfg.goal_segments else None

    def sequences(ids: list[str], seed: int, p_uncond_free: float | None = None) -> SequenceDataset:
        return SequenceDataset(source, ids, cfg.T, cfg.min_btwn_goals, cfg.max_btwn_goals, cfg.p_uncond, seed=seed,
                               event_horizon=cfg.goal_event_horizon, event_pick=cfg.goal_event_pick, tasks=tasks,
                               p_uncond_free=p_uncond_free, segment_goals=segments)

    train_set = sequences(train_ids, cfg.seed)
    if cfg.goal_balance:
        weights, shares = goal_balance_weights(train_set, names, cfg.goal_balance)
        train_set.set_weights(weights)  # a p_uncond share of the draws (not of the sequences) is unconditioned
        print(f"goal_balance={cfg.goal_balance}: share of sequences -> of draws per goal: "
              + ", ".join(f"{c or 'none'} {a:.3f} -> {b:.3f}" for c, (a, b) in shares.items()), flush=True)
    val_set = sequences(val_ids, cfg.val_seed, train_set.p_uncond_free)  # the same rule as training, every run
    if cfg.free_play and cfg.p_uncond > 0 and train_set.free_play_share == 0:
        raise ValueError(f"free_play={cfg.free_play!r}: every training episode is a task there, so no sequence "
                         f"could get the zero goal (p_uncond={cfg.p_uncond}); record some free play "
                         f"(`steve1 record focus_fraction=` below 1) or drop free_play")
    if len(train_set) < cfg.sequences_per_group:
        raise ValueError(
            f"{len(train_set)} training sequences of T={cfg.T} frames (from {len(train_ids)} episodes, "
            f"{len(train_set.skipped)} too short) but one step needs batch_size*grad_accum*num_workers = "
            f"{cfg.sequences_per_group}: lower T, batch_size, grad_accum or num_workers, or add data")
    return train_set, val_set, embed_dim


def make_policy(cfg: TrainConfig, embed_dim: int | None):
    """The policy from `cfg.model` (+ `cfg.in_weights`), its goal layer sized for the data's embeddings."""
    overrides = {}
    if cfg.model in PRESETS and embed_dim is not None:  # a .model file fixes its own goal width
        overrides["embed_dim"] = embed_dim
    model = local_copy(cfg.model) if cfg.model.endswith(".model") else cfg.model  # s3://... copied to this node
    weights = None if cfg.in_weights is None else local_copy(cfg.in_weights)
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"in_weights={cfg.in_weights!r} does not exist: give the path of a VPT "
                                f"(rl-from-foundation-2x.weights) or STEVE-1 (steve1.weights) file, or in_weights=null")
    policy = load_policy(model, weights, **overrides)
    report = getattr(policy, "load_report", None)
    if report is not None and report.missing_goal_layer:
        print(f"{cfg.in_weights}: no goal layer (a VPT file); net.mineclip_embed_linear starts fresh", flush=True)
    if embed_dim is not None and policy.cfg.embed_dim != embed_dim:
        raise ValueError(f"the dataset's goal embeddings have {embed_dim} dims but model={cfg.model!r} "
                         f"expects {policy.cfg.embed_dim}: embed the data with the matching embedder")
    return policy


def load_goal_axes(path: str | None, embed_dim: int, device) -> torch.Tensor | None:
    """`goal_null_axes`: a (k, embed_dim) float `.npy` (k < embed_dim, finite, rows of full rank) -> orthonormal
    rows (float32 on `device`), or None without a path."""
    if path is None:
        return None
    local = local_copy(path)
    if not Path(local).is_file():
        raise FileNotFoundError(f"goal_null_axes={path!r} does not exist (make one with `steve1 goal-axes`)")
    try:
        a = np.load(local, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"goal_null_axes={path!r}: not a readable .npy array ({e})") from None
    if not isinstance(a, np.ndarray):  # an .npz archive
        a.close()
        raise ValueError(f"goal_null_axes={path!r}: an .npz archive, not one .npy array")
    if a.ndim != 2 or a.shape[1] != embed_dim or not 1 <= a.shape[0] < embed_dim:
        raise ValueError(f"goal_null_axes={path!r}: expected (k, {embed_dim}) with 1 <= k < {embed_dim}, "
                         f"got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
        raise ValueError(f"goal_null_axes={path!r}: must hold finite floats")
    q, r = np.linalg.qr(a.astype(np.float64).T)  # orthonormal basis of the rows' span
    if np.abs(np.diag(r)).min() < 1e-6 * max(np.abs(np.diag(r)).max(), 1e-12):
        raise ValueError(f"goal_null_axes={path!r}: its {a.shape[0]} rows are linearly dependent")
    return torch.from_numpy(q.T.astype(np.float32)).to(device)


def prepare_policy(policy, cfg: TrainConfig, device):
    """Freeze `cfg.freeze`, turn on activation checkpointing if asked, move to `device`, train mode."""
    freeze_parts(policy, cfg.freeze_prefixes)
    if cfg.activation_checkpointing:
        policy.set_activation_checkpointing(True)
        enable_activation_checkpointing(policy, [n for n, _ in policy.named_modules()
                                                 if n.startswith("net.img_process.cnn.stacks.")
                                                 and n.count(".") == 4])
    return policy.to(device).train()


def distributed(policy, device):
    """`policy` in DDP: gradients are averaged over the workers in `backward`."""
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(policy, device_ids=device_ids)


def groups_from(progress: Progress, loader: Prefetcher, n_sequences: int, cfg: TrainConfig, rank: int, world: int):
    """Yield (epoch, group index, groups in the epoch, micro-batches) endlessly, from the data position in
    `progress` (epoch, group), which the loop advances after each group; each epoch has its own order."""
    while True:
        epoch = progress.epoch
        groups = epoch_groups(n_sequences, cfg.seed, epoch, rank, world, cfg.batch_size, cfg.grad_accum,
                              loader.dataset.weights)
        batches = loader.iter_batches([b for g in groups[progress.group:] for b in g], epoch)
        for g in range(progress.group, len(groups)):
            yield epoch, g, len(groups), [next(batches) for _ in range(cfg.grad_accum)]


def early_stop_reason(cfg: TrainConfig, progress: Progress) -> str | None:
    """Why to stop at this group boundary (besides n_frames), or None."""
    reason = None
    if cfg.patience and progress.vals_since_best >= cfg.patience:
        reason = f"early stopping: no better val/loss in {cfg.patience} validations"
    if cfg.stop_after_steps and progress.steps >= cfg.stop_after_steps:
        reason = f"stop_after_steps={cfg.stop_after_steps} (rerun with the same run_name to resume)"
    return reason


def _crossed(before: int, after: int, every: int) -> bool:
    return before // every != after // every
