"""`TrainConfig`: every knob of one STEVE-1 behaviour-cloning run, validated on construction.

Presets live in `configs/train/{debug,finetune,paper}.yaml` (found by `steve1_ray.config.preset_path`);
`load_train_config` applies a preset file and
`key=value` overrides on top of these defaults (which are the STEVE-1 paper recipe, see steve1-original.md).

Units: `*_frames` count training frames summed over all workers; `*_steps` count optimizer steps. One
optimizer step consumes `trunc_t * batch_size * grad_accum * num_workers` frames (`frames_per_step`).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional

from steve1_ray.config import ConfigError, check, load_config, preset_path
from steve1_ray.models.loading import WEIGHTS_NAME, is_uri  # noqa: F401 (is_uri: imported from here elsewhere)

PRECISIONS = ("fp32", "bf16", "fp16")
LOSS_REDUCTIONS = ("sum_time", "mean")
# Short names for `freeze`; anything else is taken as a parameter-name prefix. `goal` (and `goal_lr_scale`) is the goal
# layer only: a `goal_film` policy's FiLM layers train with the CNNs (`cnn`/`img_process` freeze them too).
FREEZE_ALIASES = {
    "cnn": "net.img_process.cnn.",
    "img_process": "net.img_process.",
    "recurrent": "net.recurrent_layer.",
    "lastlayer": "net.lastlayer.",
    "final_ln": "net.final_ln.",
    "goal": "net.mineclip_embed_linear.",
    "pi_head": "pi_head.",
}


@dataclass
class TrainConfig:
    # --- model ------------------------------------------------------------------------------------------
    model: str = "2x"
    """Policy architecture: a preset name (`debug`, `1x`, `2x`, `3x`) or an original `.model` file."""
    in_weights: Optional[str] = None
    """Weights to start from: VPT (`rl-from-foundation-2x.weights`, no goal layer) or STEVE-1 (`steve1.weights`)."""
    out_weights: Optional[str] = None
    """Final weights in the original layout; `<stem>_best.weights` / `<stem>_snapshot_<frames>.weights` go beside.
    Default: `<storage_path>/<run_name>/weights/steve1.weights`."""

    # --- data -------------------------------------------------------------------------------------------
    data: str = ""
    """Root of a Parquet shard dataset (`manifest.json` + shards), written by `steve1 dataset`."""
    sampling: Optional[str] = None
    """Name of a sampling (`steve1 sampling name=...`): episodes from `<sampling_dir>/<sampling>_{train,val}.txt`,
    which may mix several datasets. None: every episode of `data`, `val_fraction` of them held out (by id hash)."""
    sampling_dir: str = "samplings"
    """Folder of the sampling files (`steve1 sampling output_dir=...`)."""
    val_fraction: float = 0.1
    """Share of `data`'s episodes held out for validation (by id hash) when `sampling` is None."""
    T: int = 640
    """Frames per training sequence (one relabeled episode segment)."""
    trunc_t: int = 64
    """Frames per piece of truncated BPTT; the recurrent state is carried (detached) from piece to piece."""
    min_btwn_goals: int = 15
    """Fewest frames between two relabeled goals (STEVE-1: 15); a goal closer than this to the episode's end
    moves to its last frame."""
    max_btwn_goals: int = 200
    """Goal spacing is `randint(min_btwn_goals, max_btwn_goals)` (high bound exclusive), as in STEVE-1. Below 15
    (short activities, e.g. the embedded world's) goals still start at frame 15, the first with a goal clip."""
    goal_event_horizon: int = 0
    """Ours, off (0) by default: a frame whose episode has an *event* (a `stats` counter rose: an achievement, a
    block mined, an item crafted) at most this many frames ahead is conditioned on the clip that ends just after
    that event instead of the spaced goal, i.e. on what it is about to achieve. Needs a dataset written by
    `steve1 dataset` since events were recorded (index entries with `events`)."""
    goal_event_pick: str = "next"
    """With goal_event_horizon: which event a frame takes when several lie within the horizon: `next` (the
    nearest), `last` (the farthest, so the steps towards a goal that needs others first, e.g. two logs before
    a table, are conditioned on that goal, but also any unrelated later event), or `use` (the nearest, or the
    later event within the horizon that used what it gained: the log's table; needs a dataset whose index
    carries `event_links`; `steve1_ray.train.relabel.event_goals`)."""
    p_uncond: float = 0.1
    """Probability that a whole sequence gets zero goal embeddings (the classifier-free-guidance token)."""
    free_play: Optional[str] = None
    """Ours, off by default: a recording (`steve1 record out=`) whose `meta/<episode>.json` name each task
    episode's goal (`focus`). Then only free play (every episode that is not such a task, e.g. contractor data
    mixed in) meets the zero goal, still on a `p_uncond` share of all sequences: the unconditioned branch learns
    play without a task, so guidance pushes from free play towards the goal rather than from the recording's
    mix of tasks (docs/training.md)."""
    goal_null_axes: Optional[str] = None
    """Ours, off by default: a `.npy` of (k, embed_dim) goal directions the policy must not read (e.g. which way the
    embedded world's player faces, `steve1 goal-axes`). Every goal layer's weight is projected off them before the
    first step and after every optimizer step (`Steve1Policy.null_goal_axes`), so checkpoints and exported weights
    act the same on g and g + Uᵀc (docs/training.md)."""
    goal_segments: Optional[str] = None
    """Ours, off by default: a recording (`steve1 record out=`) whose `meta/<episode>.json` list the
    demonstrators' captioned segments. Then every frame of an achieved segment is conditioned on the clip that
    ends the segment, the clips the world prior maps each caption to (`train.prior.world_pairs`), instead of its
    spaced or event goal: what the policy learns a goal means is what a prompt's goal will ask for. The segments
    are the recording's own labels, which contractor data does not have (docs/training.md)."""
    goal_balance: float = 0.0
    """Ours, off by default; needs `goal_segments`: each epoch draws its sequences with replacement so that the
    segment goals come up in proportion to (their count) ** (1 - goal_balance) instead of their count: 1 = every
    goal (and the sequences no segment covers) equally often, 0 = a plain permutation of all sequences. A
    sequence's goal is the segment goal most of its segment-goal frames take (`train.data.goal_balance_weights`);
    each copy of a sequence drawn twice gets its own goal draws; with `free_play` the unconditioned share is
    `p_uncond` of the draws; validation keeps the data's own proportions."""
    loader_threads: int = 2
    """Threads per training worker that read and decode sequences ahead of the model."""
    prefetch_batches: int = 4
    """Micro-batches (of `batch_size` sequences) each worker loads ahead of the model, in training and validation."""

    # --- batch / scale ----------------------------------------------------------------------------------
    batch_size: int = 12
    """Sequences per worker per micro-batch."""
    grad_accum: int = 4
    """Micro-batches (of different sequences) whose gradients are summed before each optimizer step."""
    num_workers: int = 1
    """Ray Train workers (one per GPU). 0 = run the loop in the driver process (local mode, for tests)."""
    use_gpu: bool = False
    """Train on GPUs: each Ray Train worker gets `gpus_per_worker` of them and NCCL (false: CPU and gloo)."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves for each training worker."""
    gpus_per_worker: float = 1.0
    """GPUs Ray reserves for each training worker when `use_gpu` is true."""
    placement_strategy: str = "PACK"
    """How Ray places the workers' resource bundles (Ray's placement-group strategies): PACK (as few nodes as
    possible, Ray's default), SPREAD, STRICT_PACK (one node) or STRICT_SPREAD (each worker on its own node)."""

    # --- objective / optimizer --------------------------------------------------------------------------
    loss_reduction: str = "sum_time"
    """`sum_time`: the original's −mean over sequences of Σ_t log p(a_t) per piece; `mean`: per-frame mean."""
    lr: float = 4e-5
    """Peak learning rate (AdamW), reached after `warmup_frames`; the paper's 4e-5."""
    goal_lr_scale: float = 1.0
    """The goal layer's learning rate is `lr` times this (fine-tuning a foundation policy whose goal layer starts
    at zero: it has to learn what the rest of the network already knows)."""
    weight_decay: float = 0.039428
    """On weights of Linear/Conv/GroupNorm layers and other parameters; never on biases, LayerNorm, Embedding."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas (torch's defaults, as STEVE-1)."""
    eps: float = 1e-8
    """AdamW epsilon (torch's default, as STEVE-1)."""
    max_grad_norm: float = 5.0
    """The gradients' global L2 norm is clipped to this before every optimizer step (STEVE-1: 5.0)."""
    max_nonfinite_steps: int = 8
    """A step whose loss or gradient norm is NaN/inf is skipped on every worker and counted
    (train/skipped_steps); this many in a row stop the run with an error (docs/training.md)."""
    warmup_frames: int = 10_000_000
    """Linear lr warmup from 0 over this many frames, then the cosine decay (STEVE-1: 10M)."""
    n_frames: int = 100_000_000
    """Training stops once this many frames have been trained on."""
    decay_frames_factor: float = 1.1
    """Cosine decay reaches 0 at `decay_frames_factor * n_frames` (STEVE-1: 1.1)."""
    precision: str = "bf16"
    """`fp32`, `bf16` (autocast, fp32 master weights) or `fp16` (autocast + GradScaler)."""
    activation_checkpointing: bool = False
    """Recompute CNN stacks and transformer blocks in the backward pass (less memory, ~30% more compute)."""
    reuse_freed_memory: bool = True
    """Each Ray Train worker keeps the memory a step frees for the next step instead of returning it to the OS
    (glibc tunables in its environment, steve1_ray/hostmem.py): the 2x step on CPU without its refaults took 7.4 s
    instead of 10.1-10.7 s (benchmarks/RESULTS.md, session 21). The worker's RSS then stays at its peak; false =
    glibc's defaults. (Local mode, num_workers=0, runs in this process: untouched.)"""
    freeze: list[str] = field(default_factory=list)
    """Parts kept fixed: `cnn`, `img_process`, `recurrent`, `lastlayer`, `final_ln`, `goal`, `pi_head`, or
    parameter-name prefixes. The value head is never trained (it is not in the loss)."""

    # --- validation / checkpoints ---------------------------------------------------------------------
    val_every_steps: int = 1000
    """Validate each time the optimizer step count passes a multiple of this (checked every T/trunc_t steps)."""
    val_at_start: bool = True
    """Validate once before the first step of a fresh (not resumed) run."""
    val_max_sequences: int = 0
    """Validate on at most this many val sequences (0 = all)."""
    val_seed: int = 12345
    """Relabeling seed of the validation set: the same goals and p_uncond draws every time and every run."""
    patience: int = 0
    """Stop after this many validations without a new best (0 = never stop early)."""
    checkpoint_every_steps: int = 1000
    """Write a Ray checkpoint each time the step count passes a multiple of this (checked every T/trunc_t
    steps); also after a new best val/loss and at the end."""
    snapshot_every_frames: int = 50_000_000
    """Also export `<out>_snapshot_<frames>.weights` every this many frames (0 = never)."""
    num_to_keep: int = 2
    """Ray checkpoints kept (the best by val/loss plus the latest)."""
    log_every_steps: int = 10
    """Log train/* metrics (TensorBoard and the progress line) every this many optimizer steps."""

    # --- run --------------------------------------------------------------------------------------------
    seed: int = 42
    """Seed of the initial weights, the training sequences' goal draws and each epoch's order (STEVE-1: 42)."""
    run_name: str = "steve1"
    """The run's folder under `storage_path`; rerunning with the same name resumes from its latest checkpoint."""
    fresh: bool = False
    """`steve1 train`: delete a local `<storage_path>/<run_name>` first instead of resuming from it (the config
    saved with the run says false, so re-running it resumes)."""
    storage_path: str = "~/ray_results"
    """Where Ray Train writes checkpoints: a local folder (single node) or shared storage (`s3://...`, NFS)."""
    tensorboard_dir: Optional[str] = None
    """TensorBoard event files (default: `<storage_path>/<run_name>/tensorboard`; with remote storage they are
    written to `~/ray_results/<run_name>/tensorboard` on the rank-0 node and copied there at each checkpoint)."""
    max_failures: int = 3
    """Worker-group restarts from the latest checkpoint before the run fails."""
    stop_after_steps: int = 0
    """End this job at the first group boundary at or after this optimizer step, with a checkpoint; rerunning
    with the same run_name and storage_path resumes (for time-sliced clusters). 0 = run to n_frames."""
    fail_at_step: int = -1
    """Testing aid: worker rank 1 (rank 0 if alone) exits with `os._exit` right after this optimizer step
    in its first attempt. -1 = never."""

    def __post_init__(self):
        _floats_from_strings(self)
        check(self.T > 0 and self.trunc_t > 0, f"T={self.T} and trunc_t={self.trunc_t} must be positive")
        check(self.T % self.trunc_t == 0,
              f"T={self.T} is not a multiple of trunc_t={self.trunc_t}: choose e.g. T={self.T // self.trunc_t * self.trunc_t or self.trunc_t}")
        check(self.min_btwn_goals >= 1, f"min_btwn_goals={self.min_btwn_goals}: must be >= 1")
        check(self.max_btwn_goals > self.min_btwn_goals,
              f"max_btwn_goals={self.max_btwn_goals} must be > min_btwn_goals={self.min_btwn_goals} (randint's high bound is exclusive)")
        check(self.goal_event_horizon >= 0, f"goal_event_horizon={self.goal_event_horizon} must be >= 0 (0 = off)")
        from steve1_ray.train.relabel import EVENT_PICKS

        check(self.goal_event_pick in EVENT_PICKS,
              f"goal_event_pick={self.goal_event_pick!r} must be one of {list(EVENT_PICKS)}")
        check(0.0 <= self.p_uncond <= 1.0, f"p_uncond={self.p_uncond} must be in [0, 1]")
        check(0.0 <= self.goal_balance <= 1.0, f"goal_balance={self.goal_balance} must be in [0, 1]")
        check(not self.goal_balance or bool(self.goal_segments),
              f"goal_balance={self.goal_balance} needs goal_segments=<the recording> (its segments name the goals)")
        check(0.0 <= self.val_fraction < 1.0, f"val_fraction={self.val_fraction} must be in [0, 1)")
        check(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        check(self.grad_accum >= 1, f"grad_accum={self.grad_accum} must be >= 1")
        check(self.num_workers >= 0, f"num_workers={self.num_workers} must be >= 0 (0 = local mode)")
        check(self.loader_threads >= 0 and self.prefetch_batches >= 1,
              f"loader_threads={self.loader_threads} must be >= 0 and prefetch_batches={self.prefetch_batches} >= 1")
        check(self.precision in PRECISIONS, f"precision={self.precision!r}: choose one of {PRECISIONS}")
        check(self.loss_reduction in LOSS_REDUCTIONS,
              f"loss_reduction={self.loss_reduction!r}: choose one of {LOSS_REDUCTIONS}")
        check(self.lr > 0, f"lr={self.lr} must be > 0")
        check(self.goal_lr_scale > 0, f"goal_lr_scale={self.goal_lr_scale} must be > 0")
        check(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0")
        check(self.max_grad_norm > 0, f"max_grad_norm={self.max_grad_norm} must be > 0 (clipping is always on)")
        check(self.max_nonfinite_steps >= 1, f"max_nonfinite_steps={self.max_nonfinite_steps} must be >= 1")
        check(self.n_frames > 0, f"n_frames={self.n_frames} must be > 0")
        check(self.warmup_frames >= 0, f"warmup_frames={self.warmup_frames} must be >= 0")
        check(self.decay_frames_factor >= 1.0, f"decay_frames_factor={self.decay_frames_factor} must be >= 1")
        for name in ("val_every_steps", "checkpoint_every_steps", "log_every_steps"):
            check(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        for name in ("val_max_sequences", "patience", "snapshot_every_frames", "max_failures", "stop_after_steps"):
            check(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")
        check(self.num_to_keep >= 1, f"num_to_keep={self.num_to_keep} must be >= 1")
        check(self.cpus_per_worker > 0, f"cpus_per_worker={self.cpus_per_worker} must be > 0")
        check(self.placement_strategy in PLACEMENT_STRATEGIES,
              f"placement_strategy={self.placement_strategy!r}: choose one of {', '.join(PLACEMENT_STRATEGIES)}")
        for part in self.freeze:
            check(part in FREEZE_ALIASES or part.endswith("."),
                  f"freeze: unknown part {part!r}; use one of {sorted(FREEZE_ALIASES)} or a parameter prefix ending in '.'")
        check(bool(self.run_name) and "/" not in self.run_name,
              f"run_name={self.run_name!r} must be a non-empty name without '/'")

    def with_absolute_paths(self) -> "TrainConfig":
        """Local paths made absolute where the driver runs: Ray Train workers start in another folder, so a
        relative `in_weights=` or `data=` given on the command line would not be found there. URIs stay."""
        def local(path):
            return _expand(path) if path else path

        model = self.model
        if model.endswith(".model") or os.sep in model or os.path.exists(model):  # a file, not a preset name
            model = local(model)
        return dataclasses.replace(
            self, model=model, in_weights=local(self.in_weights), out_weights=local(self.out_weights),
            data=local(self.data), sampling_dir=local(self.sampling_dir), storage_path=local(self.storage_path),
            free_play=local(self.free_play), goal_segments=local(self.goal_segments),
            goal_null_axes=local(self.goal_null_axes),
            tensorboard_dir=local(self.tensorboard_dir))

    # --- derived quantities ---------------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return max(self.num_workers, 1)

    @property
    def frames_per_step(self) -> int:
        """Frames behind one optimizer step, summed over micro-batches and workers."""
        return self.trunc_t * self.batch_size * self.grad_accum * self.world_size

    @property
    def steps_per_group(self) -> int:
        """Optimizer steps per group of micro-batches (one per trunc_t piece of the T-frame sequences)."""
        return self.T // self.trunc_t

    @property
    def sequences_per_group(self) -> int:
        """Sequences consumed by all workers together per group of `steps_per_group` optimizer steps."""
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def freeze_prefixes(self) -> list[str]:
        return [FREEZE_ALIASES.get(p, p) for p in self.freeze]

    def run_dir(self) -> str:
        """`<storage_path>/<run_name>` (a path or a URI)."""
        return _join(_expand(self.storage_path), self.run_name)

    def resolved_out_weights(self) -> str:
        return self.out_weights or _join(self.run_dir(), "weights", WEIGHTS_NAME)

    def resolved_tensorboard_dir(self) -> str:
        if self.tensorboard_dir:
            return _expand(self.tensorboard_dir)
        if is_uri(self.storage_path):  # written locally on the rank-0 node, copied to storage at checkpoints
            return os.path.join(os.path.expanduser("~/ray_results"), self.run_name, "tensorboard")
        return os.path.join(self.run_dir(), "tensorboard")



def _floats_from_strings(cfg) -> None:
    """YAML 1.1 reads `3e-4` (no dot) as a string; accept it for float fields, reject anything else."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if hints[f.name] is float and isinstance(value, str):
            try:
                setattr(cfg, f.name, float(value))
            except ValueError:
                raise ConfigError(f"{f.name}: expected a number, got {value!r}") from None
        elif hints[f.name] is int and isinstance(value, str):
            raise ConfigError(f"{f.name}: expected an integer, got {value!r}")


PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def _expand(path: str) -> str:
    if is_uri(path):
        return path
    if path.startswith("file://"):
        path = path[len("file://"):]
    return os.path.abspath(os.path.expanduser(path))


def _join(base: str, *parts: str) -> str:
    if is_uri(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def load_train_config(config: str | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults <- preset/YAML file <- `key=value` overrides."""
    files = [preset_path("train", config)] if config else []
    return load_config(TrainConfig, files, overrides)
