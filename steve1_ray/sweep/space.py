"""A sweep's config and search space, without Ray: read, checked against TrainConfig, applied to it.

One YAML file describes a sweep (`SweepConfig`): the training config it starts from (`train_configs` +
`train_overrides`), the search space (`space:`), the search algorithm, the early-stopping scheduler and the
resources of each trial. steve1_ray.sweep.run hands it to Ray Tune.

Search-space entries (`space:` in the YAML), keyed by training-config field (dots for nested fields):

    lr:             {dist: loguniform, low: 1.0e-5, high: 1.0e-3}
    p_uncond:       {dist: uniform, low: 0.0, high: 0.3}
    min_btwn_goals: {dist: int, low: 15, high: 30}        # inclusive bounds
    batch_size:     {dist: choice, values: [4, 8, 12]}
    T:              {dist: grid, values: [320, 640]}       # every value, num_samples times (random search only)
    trunc_t:        64                                     # a plain value is fixed

Every `min_X` / `max_X` pair must satisfy min < max for every sample: the top of `min_X`'s range must lie
below the bottom of `max_X`'s range. The space is also checked by building the training config at its
corners and for every choice combination, so a value the training config rejects fails before any trial.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from steve1_ray.config import ConfigError, check, from_dict, load_config, preset_path, to_dict

DISTS = ("loguniform", "uniform", "int", "logint", "choice", "grid")
SEARCHES = ("random", "optuna")
SCHEDULERS = ("asha", "fifo")


@dataclass
class SweepConfig:
    """One hyperparameter sweep: what to train, what to vary, how to search and stop, and where to write."""

    name: str = "steve1_sweep"
    """Experiment name: the folder under `storage_path`; rerunning with the same name resumes the sweep."""
    storage_path: str = "runs/sweeps"
    """Where experiments live: a local folder (made absolute) or a URI such as s3://bucket/sweeps.
    On a multi-node cluster it must be storage every node can reach (NFS, S3, GCS)."""
    train_configs: list[str] = field(default_factory=lambda: ["debug"])
    """Training presets (`debug`, `finetune`, `paper`) or YAML files every trial starts from, in order.
    The training config also sets each trial's resources: `num_workers` x (`cpus_per_worker`, `gpus_per_worker`)."""
    train_overrides: list[str] = field(default_factory=list)
    """`key=value` training-config overrides applied before the sampled parameters (on the command line:
    `train.key=value`)."""
    space: dict = field(default_factory=dict)
    """Search space: training-config field -> {dist: ..., ...} or a fixed value (see the module docstring)."""
    num_samples: int = 8
    """Trials to sample (with `grid` entries: samples per grid point)."""
    max_concurrent_trials: int = 2
    """Trials running at once; each one holds the training config's `num_workers` Train workers."""
    search: str = "random"
    """`random` (seeded random search; supports `grid`) or `optuna` (TPE via OptunaSearch)."""
    scheduler: str = "asha"
    """`asha` (stop trials whose val loss trails at a rung) or `fifo` (run every trial to the end)."""
    metric: str = "val/loss"
    """The metric trials are compared on; the training loop reports it at every validation."""
    mode: str = "min"
    """`min` or `max`: whether a lower or a higher `metric` is better (`min` for val/loss)."""
    time_attr: str = "frames"
    """Progress measure for ASHA rungs: frames seen, so trials with other batch sizes compare fairly."""
    max_t: Optional[int] = None
    """ASHA's horizon in `time_attr` units; default: the training config's total frames (`n_frames`)."""
    grace_period: int = 1
    """ASHA never stops a trial before this many `time_attr` units."""
    reduction_factor: float = 2.0
    """ASHA keeps the best 1/reduction_factor of trials at each rung."""
    trial_driver_cpus: float = 0.01
    """CPUs reserved for each trial's driver, which only waits on its Train run (Tune needs > 0)."""
    max_failures: int = 1
    """Times Tune restarts a trial whose driver or Train controller died; its Train run resumes from its
    latest checkpoint. (Worker failures inside a run are retried by Train: the training config's
    `max_failures`.)"""
    seed: int = 0
    """Seeds the search algorithm (which configs are sampled, in which order)."""
    resume: str = "auto"
    """`auto`: resume `<storage_path>/<name>` if it holds an experiment, else start; `never`: refuse to
    touch an existing experiment; `must`: fail unless there is one to resume."""

    def __post_init__(self):
        check(bool(self.name) and "/" not in self.name, f"name {self.name!r} must be a non-empty folder name")
        check(self.num_samples >= 1, f"num_samples={self.num_samples} must be >= 1")
        check(self.max_concurrent_trials >= 1,
              f"max_concurrent_trials={self.max_concurrent_trials} must be >= 1")
        check(self.search in SEARCHES, f"search={self.search!r} must be one of {SEARCHES}")
        check(self.scheduler in SCHEDULERS, f"scheduler={self.scheduler!r} must be one of {SCHEDULERS}")
        check(self.mode in ("min", "max"), f"mode={self.mode!r} must be 'min' or 'max'")
        check(self.grace_period >= 1, f"grace_period={self.grace_period} must be >= 1")
        check(self.reduction_factor > 1, f"reduction_factor={self.reduction_factor} must be > 1")
        check(self.max_t is None or self.max_t >= self.grace_period,
              f"max_t={self.max_t} must be >= grace_period={self.grace_period}")
        check(self.max_failures >= 0, f"max_failures={self.max_failures} must be >= 0")
        check(self.trial_driver_cpus > 0,
              f"trial_driver_cpus={self.trial_driver_cpus} must be > 0 (Tune rejects an empty request; "
              f"0.01 is enough)")
        check(self.resume in ("auto", "never", "must"),
              f"resume={self.resume!r} must be 'auto', 'never' or 'must'")
        check(isinstance(self.space, dict) and bool(self.space),
              "space is empty: give at least one training-config field to vary, e.g. "
              "space: {lr: {dist: loguniform, low: 1.0e-5, high: 1.0e-3}}")

    @property
    def experiment_path(self) -> str:
        return _join(_abs_storage(self.storage_path), self.name)


# ----------------------------------------------------------------------------------------------------------
# Search space: YAML -> checked Params
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One swept (or fixed) training-config field."""

    key: str
    dist: str  # one of DISTS, or "fixed"
    low: Any = None
    high: Any = None
    values: tuple = ()

    def candidates(self) -> list:
        """Values that span the parameter's range: its bounds, or each of its values."""
        if self.dist == "fixed":
            return [self.low]
        if self.dist in ("choice", "grid"):
            return list(self.values)
        return [self.low, self.high]

    @property
    def bounds(self) -> tuple[Any, Any]:
        vals = self.candidates()
        return min(vals), max(vals)


def parse_space(space: dict) -> list[Param]:
    """Read the `space:` mapping into Params; every mistake is named with the entry it is in."""
    params = []
    for key, spec in space.items():
        where = f"space.{key}"
        if not isinstance(spec, dict):
            check(not isinstance(spec, list),
                  f"{where}: a list is ambiguous; write {{dist: choice, values: {spec}}} or "
                  f"{{dist: grid, values: {spec}}}")
            params.append(Param(key, "fixed", low=spec))
            continue
        dist = spec.get("dist")
        check(dist in DISTS, f"{where}: dist={dist!r} must be one of {DISTS} (or give a plain value to fix it)")
        if dist in ("choice", "grid"):
            extra = sorted(set(spec) - {"dist", "values"})
            check(not extra, f"{where}: unknown key(s) {extra} for dist={dist}; it takes 'values'")
            values = spec.get("values")
            check(isinstance(values, list) and len(values) >= 1,
                  f"{where}: dist={dist} needs a non-empty list 'values', got {values!r}")
            params.append(Param(key, dist, values=tuple(values)))
            continue
        extra = sorted(set(spec) - {"dist", "low", "high"})
        check(not extra, f"{where}: unknown key(s) {extra} for dist={dist}; it takes 'low' and 'high'")
        low, high = _number(spec.get("low"), f"{where}.low"), _number(spec.get("high"), f"{where}.high")
        check(low < high, f"{where}: low={low} must be < high={high}")
        if dist in ("int", "logint"):
            check(float(low).is_integer() and float(high).is_integer(),
                  f"{where}: dist={dist} needs integer low/high, got {low}, {high}")
            low, high = int(low), int(high)
        if dist in ("loguniform", "logint"):
            check(low > 0, f"{where}: dist={dist} needs low > 0, got {low}")
        if dist in ("loguniform", "uniform"):
            low, high = float(low), float(high)
        params.append(Param(key, dist, low=low, high=high))
    return params


def _lookup(data: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _number(value, where: str) -> float | int:
    if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}={value!r} is not a number") from None
    check(isinstance(value, (int, float)) and not isinstance(value, bool),
          f"{where}={value!r} must be a number")
    return value


def check_min_max_pairs(params: list[Param], base: dict | None = None) -> None:
    """`min_X` < `max_X` for every possible sample (e.g. min_btwn_goals < max_btwn_goals).

    A pair with one side swept is checked against the other side's value in the training config `base`.
    """
    by_key = {p.key: p for p in params}
    for key in list(by_key):
        head, _, last = key.rpartition(".")
        for a, b in (("min_", "max_"), ("max_", "min_")):
            if last.startswith(a):
                other = (head + "." if head else "") + b + last[len(a):]
                value = _lookup(base or {}, other)
                if other not in by_key and value is not None:
                    by_key[other] = Param(other, "fixed", low=value)
    for key, p in by_key.items():
        head, _, last = key.rpartition(".")
        if not last.startswith("min_"):
            continue
        other_key = (head + "." if head else "") + "max_" + last[len("min_"):]
        q = by_key.get(other_key)
        if q is None:
            continue
        lo_max, hi_min = q.bounds[0], p.bounds[1]
        check(hi_min < lo_max,
              f"space: {key} can reach {hi_min} but {other_key} can be as low as {lo_max}; every sample needs "
              f"{key} < {other_key}, so keep {key}'s range below {other_key}'s (e.g. {key} high < {lo_max})")


def check_space_against(params: list[Param], config_cls: type, base: dict, max_combos: int = 256) -> None:
    """Build the training config for the space's corners and every choice combination.

    Catches unknown fields, wrong types and values the config's own validation rejects (T not a multiple
    of trunc_t, p_uncond > 1, ...) before any trial starts.
    """
    discrete = [p for p in params if p.dist in ("choice", "grid", "fixed")]
    ranged = [p for p in params if p not in discrete]
    combos = list(itertools.islice(itertools.product(*[p.candidates() for p in discrete]), max_combos))
    for corner in ("low", "high"):
        for combo in combos:
            values = {p.key: v for p, v in zip(discrete, combo)}
            values.update({p.key: getattr(p, corner) for p in ranged})
            try:
                from_dict(config_cls, apply_params(base, values))
            except (ConfigError, TypeError, ValueError) as e:
                raise ConfigError(f"space: the training config rejects the sample {values}: {e}") from None


def check_search(params: list[Param], search: str) -> None:
    """The space suits the search algorithm: `grid` entries need random search (Optuna only samples)."""
    for p in params:
        check(p.dist != "grid" or search == "random", f"space.{p.key}: dist=grid needs search=random "
                                                      f"(optuna samples; use dist=choice instead)")


def apply_params(base: dict, params: dict) -> dict:
    """A copy of the training-config dict `base` with `params` (dotted keys for nested fields) set."""
    out = json.loads(json.dumps(base))
    for key, value in params.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            check(isinstance(node, dict), f"space.{key}: {part!r} is not a section of the training config")
        node[parts[-1]] = _plain(value)
    return out


def _plain(value):
    """NumPy scalars (Tune samples them) -> Python scalars, so configs serialise cleanly."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict)) else value


# ----------------------------------------------------------------------------------------------------------
# The training config every trial starts from
# ----------------------------------------------------------------------------------------------------------

PATH_FIELDS = ("data", "sampling_dir", "in_weights", "model")
"""Training-config fields that may name local files: made absolute, since trials run in their own folders."""


def load_base_train_config(cfg: SweepConfig) -> dict:
    """The resolved training config (presets + overrides) as a dict, local paths made absolute."""
    from steve1_ray.train.config import TrainConfig

    train_cfg = load_config(TrainConfig, [preset_path("train", c) for c in cfg.train_configs], cfg.train_overrides)
    check(train_cfg.num_workers >= 1,
          f"the training config has num_workers={train_cfg.num_workers}: local mode (0) reports nothing to "
          f"Tune; use train.num_workers=1 or more")
    check(bool(train_cfg.data), "the training config has no data: pass train.data=<shard dataset root> (written by "
                                "`steve1 dataset`, or steve1_ray.train.synthetic.make_dataset for a smoke test)")
    check("://" in train_cfg.data or Path(train_cfg.data).expanduser().exists(),
          f"train.data={train_cfg.data!r} does not exist here: give the shard dataset's root (a shared path or "
          f"URI on a cluster)")
    base = to_dict(train_cfg)
    for name in PATH_FIELDS:
        value = base.get(name)
        if isinstance(value, str) and value and "://" not in value and Path(value).expanduser().exists():
            base[name] = str(Path(value).expanduser().resolve())
    return base


def with_pinned_validation(base: dict, params: dict) -> dict:
    """`params` plus `val_<param>` = the base value, for each swept param the training config has one for.

    So trials that sample another p_uncond or goal spacing are still validated on the same relabeled goals.
    """
    from steve1_ray.train.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = dict(params)
    for key in params:
        if f"val_{key}" in fields and base.get(f"val_{key}") is None:
            values[f"val_{key}"] = base[key]
    return values


def trial_train_config(base: dict, params: dict, storage_path: str, run_name: str):
    """The TrainConfig one trial trains: base + sampled params, writing only under its own run folder."""
    from steve1_ray.train.config import TrainConfig

    values = with_pinned_validation(base, params)
    values.update(run_name=run_name, storage_path=storage_path, out_weights=None)
    if "://" in storage_path:  # TensorBoard needs a local folder; keep each trial's apart
        values["tensorboard_dir"] = str(Path.cwd() / "tensorboard")
    else:
        values["tensorboard_dir"] = None  # -> <storage_path>/<run_name>/tensorboard
    return from_dict(TrainConfig, apply_params(base, values))


# ----------------------------------------------------------------------------------------------------------
# Checks that need no Ray; the trial count; storage paths
# ----------------------------------------------------------------------------------------------------------

def validate_sweep(cfg: SweepConfig) -> tuple[list[Param], dict]:
    """Parse and check the space against the base training config (no Ray needed): (params, base)."""
    from steve1_ray.train.config import TrainConfig

    params = parse_space(cfg.space)
    base = load_base_train_config(cfg)
    check_min_max_pairs(params, base)
    check_space_against(params, TrainConfig, base)
    check_search(params, cfg.search)
    return params, base


def horizon(cfg: SweepConfig, params: list[Param], base: dict) -> int:
    """ASHA's max_t: `max_t`, else the most frames any trial trains (`n_frames`, swept or not)."""
    if cfg.max_t:
        return cfg.max_t
    swept = [p for p in params if p.key == "n_frames"]
    return int(swept[0].bounds[1] if swept else base["n_frames"])


def _expected_trials(cfg: SweepConfig) -> int:
    grid = 1
    for p in parse_space(cfg.space):
        if p.dist == "grid":
            grid *= len(p.values)
    return cfg.num_samples * grid


def _abs_storage(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if "://" in base else str(Path(base, *parts))
