"""Hyperparameter sweeps of the behaviour-cloning loop on Ray Tune (one Ray Train run per trial).

    steve1 sweep --config configs/sweep/debug.yaml train.data=/data/shards num_samples=4 max_concurrent_trials=2
    python jobs/sweep.py --config configs/sweep/debug.yaml train.data=/data/shards

The sweep YAML (`SweepConfig`) and its search space are read and checked in steve1_ray.sweep.space. Each
trial is a Tune function that builds a `TorchTrainer` for its sampled training config and forwards the
metrics the training loop reports (`val/loss`, `frames`, ...) to Tune through `TuneReportCallback` — the
Ray 2.60 way of running Train under Tune. ASHA stops trials whose deterministic validation loss trails the
others at the same number of frames.

Outputs under `<storage_path>/<name>/`: Tune's experiment state (an interrupted sweep resumes from it: run
the same command again), one folder per trial with its TensorBoard events and its Train run, and at the end
`results.csv` / `results.md` (config, best val loss, frames, status per trial), `best_train_config.yaml`
(a ready-to-run training config) and `best.json`.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import sys
from pathlib import Path

import yaml

from steve1_ray.cluster import connect
from steve1_ray.config import check, from_dict, save_config, to_dict
from steve1_ray.runner import Job, run_job
from steve1_ray.sweep.space import (Param, SweepConfig, _abs_storage, _expected_trials, _join, _plain,
                                    apply_params, check_search, horizon, load_base_train_config, parse_space,
                                    trial_train_config, validate_sweep, with_pinned_validation)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Search space -> Tune domains
# ----------------------------------------------------------------------------------------------------------

def to_tune_space(params: list[Param], search: str) -> dict:
    """Tune's param_space: one domain per swept field (dotted keys kept flat), fixed values as-is."""
    from ray import tune

    check_search(params, search)
    out = {}
    for p in params:
        if p.dist == "grid":
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

    trials = ExperimentAnalysis(result_grid.experiment_path, storage_filesystem=result_grid.filesystem).trials
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


RESULT_FILES = ("results.csv", "results.md", "best.json", "best_train_config.yaml")
"""what a sweep writes beside its experiment (also uploaded there when the experiment lives at a URI)"""


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
    remote = "://" in cfg.experiment_path
    out_dir = Path("runs", "sweeps", cfg.name) if remote else Path(cfg.experiment_path)
    write_results(rows, out_dir)
    best = write_best(rows, cfg, base, out_dir)
    if remote:  # beside Tune's experiment state, where every node (and the next run) finds them
        from steve1_ray.train.checkpoint import copy_to_uri

        for name in RESULT_FILES:
            if (out_dir / name).is_file():
                copy_to_uri(str(out_dir / name), _join(cfg.experiment_path, name))
        if best:
            best["train_config"] = _join(cfg.experiment_path, "best_train_config.yaml")
    unfinished = any(r["status"] == "unfinished" for r in rows) or len(rows) < _expected_trials(cfg)
    return {"rows": rows, "best": best, "path": str(out_dir), "interrupted": unfinished}


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


def sweep(cfg: SweepConfig) -> int:
    """`steve1 sweep`: check the space, join Ray with the dashboard (see below), run or resume, print the table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    validate_sweep(cfg)
    # Train under Tune: the placement-group cleaner of stopped trials needs the State API (the dashboard) and
    # the cluster's address in every worker (steve1_ray.cluster).
    connect(dashboard=True)
    warn_if_no_dashboard()
    out = run_sweep(cfg)
    print((Path(out["path"]) / "results.md").read_text())
    if out["best"]:
        print(f"best trial {out['best']['trial']}: {cfg.metric} = {out['best'][f'best {cfg.metric}']:.6g}; "
              f"config: {out['best']['train_config']}")
    if out["interrupted"]:
        print(f"the sweep is unfinished; run the same command again to resume it from {cfg.experiment_path}")
        return 1
    return 0


JOB = Job("sweep", SweepConfig, sweep, presets="sweep", list_overrides={"train.": "train_overrides"},
          summary=__doc__.strip().splitlines()[0],
          examples="""
          steve1 sweep --config debug train.data=/data/shards num_samples=4 max_concurrent_trials=2
          (train.key=value overrides go to the trials' training config, after train_overrides)""")


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, argv)


if __name__ == "__main__":
    sys.exit(main())
