"""Hyperparameter sweeps of the behaviour-cloning loop on Ray Tune (one Ray Train run per trial).

    steve1 sweep --config tune/spaces/debug.yaml train.data=/data/shards num_samples=4 max_concurrent_trials=2

One YAML file describes a sweep: the training config it starts from (`train_configs` + `train_overrides`),
the search space (`space:`), the search algorithm, the early-stopping scheduler and the resources of each
trial. Each trial is a Tune function that builds a `TorchTrainer` for its sampled training config and
forwards the metrics the training loop reports (`val/loss`, `frames`, ...) to Tune through
`TuneReportCallback` — the Ray 2.60 way of running Train under Tune. ASHA stops trials whose deterministic
validation loss trails the others at the same number of frames.

Outputs under `<storage_path>/<name>/`: Tune's experiment state (an interrupted sweep resumes from it: run
the same command again), one folder per trial with its TensorBoard events and its Train run, and at the end
`results.csv` / `results.md` (config, best val loss, frames, status per trial), `best_train_config.yaml`
(a ready-to-run training config) and `best.json`.

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

import argparse
import dataclasses
import itertools
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from steve1_ray.config import ConfigError, check, from_dict, load_config, save_config, to_dict

log = logging.getLogger(__name__)

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
# Search space: YAML -> Tune domains, with validation
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


def to_tune_space(params: list[Param], search: str) -> dict:
    """Tune's param_space: one domain per swept field (dotted keys kept flat), fixed values as-is."""
    from ray import tune

    out = {}
    for p in params:
        if p.dist == "grid":
            check(search == "random", f"space.{p.key}: dist=grid needs search=random "
                                      f"(optuna samples; use dist=choice instead)")
            out[p.key] = tune.grid_search(list(p.values))
        elif p.dist == "choice":
            out[p.key] = tune.choice(list(p.values))
        elif p.dist == "loguniform":
            out[p.key] = tune.loguniform(p.low, p.high)
        elif p.dist == "uniform":
            out[p.key] = tune.uniform(p.low, p.high)
        elif p.dist == "int":
            out[p.key] = tune.randint(p.low, p.high + 1)  # Tune's upper bound is exclusive
        elif p.dist == "logint":
            out[p.key] = tune.lograndint(p.low, p.high + 1)
        else:
            out[p.key] = p.low
    return out


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
    from steve1_ray.train.config import TrainConfig, preset_path

    train_cfg = load_config(TrainConfig, [preset_path(c) for c in cfg.train_configs], cfg.train_overrides)
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
# One trial = one Ray Train run
# ----------------------------------------------------------------------------------------------------------

def _report_callback(metric: str, mode: str):
    """TuneReportCallback that turns a non-finite metric into +/-inf, so a diverged trial ranks last.

    (ASHA compares with `<`; a NaN loss would compare false and never be stopped.)
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    class FiniteReport(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            metrics = [dict(m) for m in metrics]
            value = metrics[0].get(metric)
            if value is not None and not math.isfinite(float(value)):
                metrics[0][metric] = math.inf if mode == "min" else -math.inf
                metrics[0]["diverged"] = 1.0
            super().after_report(run_context, metrics, checkpoint)

    return FiniteReport()


def run_trial(params: dict, *, base: dict, sweep: dict) -> None:
    """Tune function trial: train the sampled config with a TorchTrainer and forward its reports to Tune.

    The Train run lives in the trial's folder under a fixed name (`train`), so when a restored sweep
    reruns this function, Train finds its run there and the loop resumes from its latest checkpoint.
    """
    from ray import tune

    from steve1_ray.train.run import build_trainer

    cfg = from_dict(SweepConfig, sweep)
    trial_path = _join(cfg.experiment_path, Path(tune.get_context().get_trial_dir()).name)
    train_cfg = trial_train_config(base, params, storage_path=trial_path, run_name="train")
    if "://" not in trial_path:
        save_config(train_cfg, Path(trial_path) / "train_config.yaml")
    build_trainer(train_cfg, callbacks=[_report_callback(cfg.metric, cfg.mode)]).fit()


# ----------------------------------------------------------------------------------------------------------
# The Tuner: new or restored
# ----------------------------------------------------------------------------------------------------------

def validate_sweep(cfg: SweepConfig) -> tuple[list[Param], dict]:
    """Parse and check the space against the base training config (no Ray needed): (params, base)."""
    from steve1_ray.train.config import TrainConfig

    params = parse_space(cfg.space)
    base = load_base_train_config(cfg)
    check_min_max_pairs(params, base)
    check_space_against(params, TrainConfig, base)
    to_tune_space(params, cfg.search)
    return params, base


def horizon(cfg: SweepConfig, params: list[Param], base: dict) -> int:
    """ASHA's max_t: `max_t`, else the most frames any trial trains (`n_frames`, swept or not)."""
    if cfg.max_t:
        return cfg.max_t
    swept = [p for p in params if p.key == "n_frames"]
    return int(swept[0].bounds[1] if swept else base["n_frames"])


def check_resources(cfg: SweepConfig, params: list[Param], base: dict) -> None:
    """A trial that can never be placed fails now, naming the fix; too many concurrent trials only queue."""
    import ray

    if not ray.is_initialized():
        return
    per_trial = {"CPU": 0.0, "GPU": 0.0}
    for combo in itertools.islice(itertools.product(*[p.candidates() for p in params]), 1024):
        t = apply_params(base, {p.key: v for p, v in zip(params, combo)})
        per_trial["CPU"] = max(per_trial["CPU"], t["num_workers"] * t["cpus_per_worker"] + cfg.trial_driver_cpus)
        if t["use_gpu"]:
            per_trial["GPU"] = max(per_trial["GPU"], t["num_workers"] * t["gpus_per_worker"])
    total = ray.cluster_resources()
    for kind, need in per_trial.items():
        have = total.get(kind, 0.0)
        check(need <= have, f"one trial needs {need:g} {kind} (num_workers x {kind.lower()}s_per_worker) but the "
                            f"cluster has {have:g}: lower train.num_workers / train.{kind.lower()}s_per_worker"
                            + (" or set train.use_gpu=false" if kind == "GPU" else ""))
        if need * cfg.max_concurrent_trials > have:
            log.warning("max_concurrent_trials=%d trials need %g %s at once but the cluster has %g: trials will "
                        "wait for each other's workers", cfg.max_concurrent_trials,
                        need * cfg.max_concurrent_trials, kind, have)


def make_search(cfg: SweepConfig):
    """(search algorithm, max_concurrent_trials for TuneConfig) for `cfg.search`."""
    if cfg.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=cfg.seed), cfg.max_concurrent_trials
    # BasicVariantGenerator is a SearchGenerator: it limits concurrency itself (Tune ignores
    # TuneConfig.max_concurrent_trials for it, with a warning)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent_trials), None


def resumable_asha(**kwargs):
    """ASHA whose rungs survive `Tuner.restore`.

    Tune restores the scheduler from the pickle taken when the sweep started, so plain ASHA forgets every
    value recorded at its rungs and would let the next trial pass unchallenged. This one replays each
    restored trial's reported history (its `progress.csv`) into the rungs when the trial is re-added.
    """
    import pandas as pd
    from ray.tune.schedulers import ASHAScheduler

    class ResumableASHA(ASHAScheduler):
        def on_trial_add(self, tune_controller, trial):
            super().on_trial_add(tune_controller, trial)
            storage = getattr(trial, "storage", None)
            if storage is None or not trial.run_metadata.last_result:
                return  # a new trial: nothing to replay
            try:
                with storage.storage_filesystem.open_input_stream(f"{trial.path}/progress.csv") as f:
                    history = pd.read_csv(f)
            except (OSError, ValueError, pd.errors.EmptyDataError):
                log.warning("trial %s: no readable progress.csv; ASHA will not count its past results",
                            trial.trial_id)
                return
            if self._time_attr not in history or self._metric not in history:
                return
            bracket = self._trial_info[trial.trial_id]
            for t, value in history[[self._time_attr, self._metric]].dropna().itertuples(index=False):
                bracket.on_result(trial, t, self._metric_op * value)  # records rung values; actions ignored

    return ResumableASHA(**kwargs)


def _abs_storage(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if "://" in base else str(Path(base, *parts))


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


_RESUME_MUST_MATCH = ("train_configs", "train_overrides", "space", "num_samples", "search",
                      "scheduler", "metric", "mode", "time_attr", "max_t", "grace_period", "reduction_factor",
                      "seed")


def build_tuner(cfg: SweepConfig, callbacks: list | None = None):
    """A Tuner for `cfg`: a fresh one, or the interrupted experiment restored (finished trials kept)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    params, base = validate_sweep(cfg)
    check_resources(cfg, params, base)
    exp_path = cfg.experiment_path
    sweep_dict = to_dict(cfg)
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=base, sweep=sweep_dict),
                                    {"cpu": cfg.trial_driver_cpus})

    saved_cfg = _join(exp_path, "sweep_config.yaml")
    if tune.Tuner.can_restore(exp_path):
        check(cfg.resume != "never",
              f"{exp_path} already holds a sweep and resume=never: choose another name= or resume=auto")
        if "://" not in exp_path and Path(saved_cfg).exists():
            before = yaml.safe_load(Path(saved_cfg).read_text())
            changed = [k for k in _RESUME_MUST_MATCH if before.get(k) != sweep_dict.get(k)]
            check(not changed, f"{exp_path} was started with other settings for {changed}; resuming would mix "
                               f"two sweeps: rerun with the saved settings ({saved_cfg}) or another name=")
        log.info("resuming the sweep in %s", exp_path)
        return tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True)
    check(cfg.resume != "must", f"resume=must but {exp_path} holds no sweep to resume")

    if "://" not in exp_path:
        save_config(cfg, saved_cfg)
    max_t = horizon(cfg, params, base)
    check(cfg.scheduler != "asha" or max_t >= cfg.grace_period,
          f"ASHA needs max_t >= grace_period={cfg.grace_period}; raise max_t= or train.n_frames=")
    if cfg.scheduler == "asha":
        scheduler = resumable_asha(time_attr=cfg.time_attr, max_t=max_t, grace_period=cfg.grace_period,
                                   reduction_factor=cfg.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    search_alg, max_concurrent = make_search(cfg)
    return tune.Tuner(
        trainable,
        param_space=to_tune_space(params, cfg.search),
        tune_config=tune.TuneConfig(metric=cfg.metric, mode=cfg.mode, num_samples=cfg.num_samples,
                                    max_concurrent_trials=max_concurrent, scheduler=scheduler,
                                    search_alg=search_alg, trial_dirname_creator=_trial_dirname,
                                    trial_name_creator=_trial_dirname),
        run_config=tune.RunConfig(name=cfg.name, storage_path=_abs_storage(cfg.storage_path),
                                  callbacks=callbacks, failure_config=tune.FailureConfig(max_failures=cfg.max_failures)),
    )


# ----------------------------------------------------------------------------------------------------------
# Results: table, best config
# ----------------------------------------------------------------------------------------------------------

def trial_rows(result_grid, cfg: SweepConfig, max_t: int | None) -> list[dict]:
    """One row per trial: id, status, its sampled config, best metric, frames reached."""
    params = [p.key for p in parse_space(cfg.space) if p.dist != "fixed"]
    # Tune's trial states as saved for a restore (a Result has none): TERMINATED, ERROR, or PENDING/RUNNING
    # for trials an interrupted sweep will rerun
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(result_grid.experiment_path).trials
    states = {t.trial_id: t.status for t in trials}
    configs = {t.trial_id: t.config for t in trials}  # also for trials that never reported (no result.config)
    rows = []
    for result in result_grid:
        trial_id = Path(result.path).name.removeprefix("trial_") if result.path else "?"
        config = result.config or configs.get(trial_id) or {}
        history = result.metrics_dataframe
        best = frames = None
        if history is not None and cfg.metric in history:
            series = history[cfg.metric].dropna()
            if len(series):
                best = float(series.min() if cfg.mode == "min" else series.max())
        if history is not None and cfg.time_attr in history and len(history[cfg.time_attr].dropna()):
            frames = int(history[cfg.time_attr].dropna().max())
        state = states.get(trial_id)
        if result.error is not None or state == "ERROR":
            status = "error"
        elif state in ("RUNNING", "PENDING", "PAUSED"):
            status = "unfinished"
        elif frames is None:
            status = "no report"
        elif max_t and frames >= max_t:  # (not the loop's `done` metric: Tune sets `done` on stopped trials too)
            status = "completed"
        else:  # by ASHA, or by the loop's own `patience`
            status = "stopped early"
        rows.append({"trial": trial_id, "status": status, **{k: _plain(config.get(k)) for k in params},
                     f"best {cfg.metric}": best, cfg.time_attr: frames,
                     "error": (str(result.error).splitlines() or [""])[0][:200] if result.error else "",
                     "path": result.path})
    key = (lambda r: (r[f"best {cfg.metric}"] is None, r[f"best {cfg.metric}"] if cfg.mode == "min"
                      else -(r[f"best {cfg.metric}"] or 0)))
    return sorted(rows, key=key)


def write_results(rows: list[dict], out_dir: Path) -> None:
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(out_dir / "results.csv", index=False)
    shown = df.drop(columns=["path"]).fillna("")
    header = "| " + " | ".join(shown.columns) + " |"
    lines = [header, "|" + "---|" * len(shown.columns)]
    for _, r in shown.iterrows():
        lines.append("| " + " | ".join(_fmt(v) for v in r) + " |")
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_best(rows: list[dict], cfg: SweepConfig, base: dict, out_dir: Path) -> dict | None:
    """`best_train_config.yaml` (the best trial's config, ready for `steve1 train --config`) + `best.json`."""
    scored = [r for r in rows if r[f"best {cfg.metric}"] is not None and math.isfinite(r[f"best {cfg.metric}"])]
    if not scored:
        return None
    best = scored[0]
    params = {p.key: best[p.key] for p in parse_space(cfg.space) if p.dist != "fixed"}
    from steve1_ray.train.config import TrainConfig

    values = {**with_pinned_validation(base, params), "run_name": f"{cfg.name}-best"}
    train_cfg = from_dict(TrainConfig, apply_params(base, values))
    path = out_dir / "best_train_config.yaml"
    save_config(train_cfg, path)
    path.write_text(f"# best trial {best['trial']} of sweep {cfg.name}: {cfg.metric} = "
                    f"{best[f'best {cfg.metric}']:.6g} at {cfg.time_attr} <= {best[cfg.time_attr]}\n"
                    + path.read_text())
    summary = {"trial": best["trial"], "params": params, f"best {cfg.metric}": best[f"best {cfg.metric}"],
               cfg.time_attr: best[cfg.time_attr], "status": best["status"], "path": best["path"],
               "train_config": str(path)}
    (out_dir / "best.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------

def run_sweep(cfg: SweepConfig, callbacks: list | None = None) -> dict:
    """Run (or resume) the sweep and write its results; returns {rows, best, path, interrupted}."""
    tuner = build_tuner(cfg, callbacks)
    result_grid = tuner.fit()
    base = load_base_train_config(cfg)
    rows = trial_rows(result_grid, cfg, horizon(cfg, parse_space(cfg.space), base))
    out_dir = Path(cfg.experiment_path) if "://" not in cfg.experiment_path else Path("runs", "sweeps", cfg.name)
    write_results(rows, out_dir)
    best = write_best(rows, cfg, base, out_dir)
    unfinished = any(r["status"] == "unfinished" for r in rows) or len(rows) < _expected_trials(cfg)
    return {"rows": rows, "best": best, "path": str(out_dir), "interrupted": unfinished}


def _expected_trials(cfg: SweepConfig) -> int:
    grid = 1
    for p in parse_space(cfg.space):
        if p.dist == "grid":
            grid *= len(p.values)
    return cfg.num_samples * grid


def connect_ray() -> None:
    """Join the running cluster (RAY_ADDRESS, `ray job submit`, `ray start`), else start one with the dashboard.

    Train's placement-group cleaner finds its cluster's State API through RAY_ADDRESS; on a host that runs
    several Ray instances (parallel test runs) it would otherwise give up and leak the placement groups of
    stopped trials. So the cluster's address is passed to every worker of this job when we choose the job's
    runtime env (not under `ray job submit`, whose runtime env is set by the submission).
    """
    import ray

    if ray.is_initialized():
        return
    submitted = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    address = os.environ.get("RAY_ADDRESS", "")
    if submitted or address.startswith(("http://", "https://", "ray://")):
        ray.init()
        return
    if address:
        ray.init(address=address, runtime_env={"env_vars": {"RAY_ADDRESS": address}})
        return
    try:
        ray.init(address="auto")
    except ConnectionError:  # none running (or several: then pick none of them)
        port = _free_port()
        ray.init(include_dashboard=True, dashboard_port=port,
                 runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}})


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def warn_if_no_dashboard() -> None:
    """Train under Tune leaks placement groups of stopped trials without the dashboard (State API)."""
    import ray

    try:
        from ray.util.state import list_placement_groups

        list_placement_groups(address=ray.get_runtime_context().gcs_address, limit=1, timeout=10)
    except Exception as e:  # the State API is served by the dashboard
        log.warning("the Ray State API (dashboard) is not reachable (%s): trials stopped early will leak their "
                    "placement groups and later trials may wait forever; start the cluster with the dashboard "
                    "on (ray start --head --include-dashboard=true)", type(e).__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steve1 sweep", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[],
                        help="sweep YAML (repeatable; later files override earlier), e.g. tune/spaces/debug.yaml")
    parser.add_argument("overrides", nargs="*",
                        help="key=value sweep overrides (num_samples=4) and train.key=value training overrides "
                             "(train.data=/data/shards)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sweep_overrides = [o for o in args.overrides if not o.startswith("train.")]
    train_overrides = [o[len("train."):] for o in args.overrides if o.startswith("train.")]
    try:
        cfg = load_config(SweepConfig, args.config, sweep_overrides)
        cfg.train_overrides = [*cfg.train_overrides, *train_overrides]
        validate_sweep(cfg)
    except ConfigError as e:
        print(f"steve1 sweep: {e}", file=sys.stderr)
        return 2
    print(yaml.safe_dump({"sweep": to_dict(cfg)}, sort_keys=False))
    connect_ray()
    warn_if_no_dashboard()
    try:
        out = run_sweep(cfg)
    except ConfigError as e:
        print(f"steve1 sweep: {e}", file=sys.stderr)
        return 2
    print((Path(out["path"]) / "results.md").read_text())
    if out["best"]:
        print(f"best trial {out['best']['trial']}: {cfg.metric} = {out['best'][f'best {cfg.metric}']:.6g}; "
              f"config: {out['best']['train_config']}")
    if out["interrupted"]:
        print(f"the sweep is unfinished; run the same command again to resume it from {cfg.experiment_path}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
