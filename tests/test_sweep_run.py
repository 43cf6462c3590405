"""Sweeps on Ray Tune (steve1_ray.sweep.run): Tune domains, search algorithms, result files, the CLI's checks;
then a tiny real sweep that runs on the test cluster and is interrupted with Ctrl-C, then resumed (slow).

Two trials of the debug policy on a synthetic dataset, run one at a time: a good learning rate, then a
hopeless one. The first run of `jobs/sweep.py` is interrupted (SIGINT) right after the good trial finishes;
rerunning the same command resumes the sweep, keeps the finished trial, and ASHA stops the hopeless one
at its first rung, comparing it with the good trial's value from before the interruption.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from steve1_ray.config import ConfigError, load_config
from steve1_ray.sweep.run import build_tuner, main, make_search, to_tune_space, write_best, write_results
from steve1_ray.sweep.space import SweepConfig, load_base_train_config, parse_space
from steve1_ray.train import synthetic
from steve1_ray.train.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
SPACES = sorted((REPO / "configs" / "sweep").glob("*.yaml"))
GOOD_LR, BAD_LR = 3e-3, 1e-7


def test_to_tune_space_maps_every_distribution():
    params = parse_space({
        "lr": {"dist": "loguniform", "low": "1e-5", "high": 1.0e-3},
        "p_uncond": {"dist": "uniform", "low": 0, "high": 0.3},
        "min_btwn_goals": {"dist": "int", "low": 15, "high": 30},
        "batch_size": {"dist": "choice", "values": [4, 8]},
        "T": {"dist": "grid", "values": [320, 640]},
        "trunc_t": 64,
    })
    space = to_tune_space(params, "random")
    assert space["trunc_t"] == 64 and space["T"] == {"grid_search": [320, 640]}
    # `int` bounds are inclusive: Tune's randint upper bound is exclusive
    assert (space["min_btwn_goals"].lower, space["min_btwn_goals"].upper) == (15, 31)
    assert sorted(space["batch_size"].categories) == [4, 8]
    with pytest.raises(ConfigError, match="dist=grid needs search=random"):
        to_tune_space(parse_space({"T": {"dist": "grid", "values": [16, 32]}}), "optuna")


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_shipped_spaces_map_to_tune_domains(path):
    cfg = load_config(SweepConfig, [path])
    to_tune_space(parse_space(cfg.space), cfg.search)


def test_cli_reports_config_errors_before_touching_ray(capsys, data_root):
    import ray

    debug = str(REPO / "configs/sweep/debug.yaml")
    was_initialized = ray.is_initialized()  # the session's cluster fixture may already be up in a full run
    assert main(["--config", debug, "search=bayes"]) == 2
    assert "search='bayes' must be one of" in capsys.readouterr().err
    assert main(["--config", debug]) == 2
    assert "pass train.data=<shard dataset root>" in capsys.readouterr().err
    assert main(["--config", debug, f"train.data={data_root}", "train.T=20"]) == 2  # trunc_t=8
    assert "T=20 is not a multiple of trunc_t=8" in capsys.readouterr().err
    assert ray.is_initialized() == was_initialized


def test_results_table_and_best_config(data_root, tmp_path):
    cfg = load_config(SweepConfig, [REPO / "configs/sweep/debug.yaml"], [])
    cfg.train_overrides.append(f"data={data_root}")
    base = load_base_train_config(cfg)
    rows = [  # as trial_rows sorts them: best first
        {"trial": "b", "status": "completed", "lr": 3e-3, "p_uncond": 0.1, "min_btwn_goals": 16,
         "max_btwn_goals": 30, "batch_size": 2, "best val/loss": 1.5, "frames": 512, "error": "", "path": "/b"},
        {"trial": "a", "status": "stopped early", "lr": 1e-4, "p_uncond": 0.2, "min_btwn_goals": 15,
         "max_btwn_goals": 25, "batch_size": 1, "best val/loss": 9.0, "frames": 128, "error": "", "path": "/a"},
    ]
    write_results(rows, tmp_path)
    table = (tmp_path / "results.md").read_text().splitlines()
    assert table[0].startswith("| trial | status | lr |") and "stopped early" in table[3]
    best = write_best(rows, cfg, base, tmp_path)
    assert best["trial"] == "b" and best["params"]["lr"] == 3e-3
    text = (tmp_path / "best_train_config.yaml").read_text()
    assert text.startswith("# best trial b of sweep debug_sweep: val/loss = 1.5")
    loaded = load_config(TrainConfig, [tmp_path / "best_train_config.yaml"])  # ready to run
    assert (loaded.lr, loaded.batch_size, loaded.max_btwn_goals) == (3e-3, 2, 30)
    assert loaded.run_name == "debug_sweep-best" and loaded.n_frames == base["n_frames"]
    assert yaml.safe_load((tmp_path / "best.json").read_text())["best val/loss"] == 1.5
    assert write_best([{**rows[0], "best val/loss": None}], cfg, base, tmp_path / "none") is None


def test_optuna_samples_inside_the_space():
    cfg = load_config(SweepConfig, [REPO / "configs/sweep/paper.yaml"])
    search, max_concurrent = make_search(cfg)
    assert type(search).__name__ == "OptunaSearch" and max_concurrent == cfg.max_concurrent_trials
    params = parse_space(cfg.space)
    assert search.set_search_properties(cfg.metric, cfg.mode, to_tune_space(params, cfg.search))
    for i in range(20):
        sample = search.suggest(f"t{i}")
        for p in params:
            value = sample[p.key]
            if p.dist == "choice":
                assert value in p.values
            else:
                assert p.low <= value <= p.high, (p.key, value)
            if p.dist == "int":
                assert isinstance(value, int)
        search.on_trial_complete(f"t{i}", {cfg.metric: float(sample["lr"]) * 1e4})
    assert sample["min_btwn_goals"] < sample["max_btwn_goals"]


def test_random_search_limits_concurrency_itself():
    cfg = load_config(SweepConfig, [REPO / "configs/sweep/debug.yaml"], ["max_concurrent_trials=3"])
    search, max_concurrent = make_search(cfg)
    assert search.max_concurrent == 3 and max_concurrent is None


def _sweep_cmd(storage: Path, data: str) -> list[str]:
    return [sys.executable, str(REPO / "jobs" / "sweep.py"), "--config", str(REPO / "configs/sweep/debug.yaml"),
            f"storage_path={storage}", "name=tiny", "num_samples=1", "max_concurrent_trials=1",
            "grace_period=32", "reduction_factor=2",
            f"space={{lr: {{dist: grid, values: [{GOOD_LR}, {BAD_LR}]}}}}",
            f"train.data={data}", "train.T=16", "train.trunc_t=8", "train.batch_size=1", "train.grad_accum=1",
            "train.n_frames=64", "train.val_every_steps=2", "train.checkpoint_every_steps=2",
            "train.val_max_sequences=2", "train.log_every_steps=2", "train.loader_threads=0"]


def _finished_trials(exp: Path, lr: float) -> list[Path]:
    """Trial folders of `lr` whose training loop sent its final report (`done`: 1.0 from the loop)."""
    done = []
    for result in exp.glob("trial_*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if any(r.get("config", {}).get("lr") == lr and r.get("frames") == 64 for r in lines):
            done.append(result.parent)
    return done


@pytest.mark.slow
def test_sweep_stops_bad_trial_writes_best_config_and_resumes(ray_cluster, tmp_path):
    data = synthetic.make_dataset(str(tmp_path / "shards"), n_episodes=4, n_frames=64, embed_dim=16)
    storage, exp = tmp_path / "sweeps", tmp_path / "sweeps" / "tiny"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address, "OMP_NUM_THREADS": "1"}
    cmd = _sweep_cmd(storage, data)

    # 1. run until the good trial has finished, then Ctrl-C the job
    with open(tmp_path / "run1.log", "w") as out:
        job = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while not _finished_trials(exp, GOOD_LR) and job.poll() is None and time.time() < deadline:
            time.sleep(1)
        assert job.poll() is None, f"the job ended early:\n{(tmp_path / 'run1.log').read_text()[-3000:]}"
        job.send_signal(signal.SIGINT)
        rc = job.wait(timeout=180)
    log1 = (tmp_path / "run1.log").read_text()
    assert rc == 1 and "run the same command again to resume" in log1, log1[-3000:]
    [good_dir] = _finished_trials(exp, GOOD_LR)
    good_history = (good_dir / "progress.csv").read_text()
    status = {float(r["lr"]): r["status"] for r in csv.DictReader(open(exp / "results.csv"))}
    # the hopeless trial had not reached ASHA's rung: after the resume, only the good trial's value from
    # before the interruption (replayed into the restored scheduler) can stop it
    assert status == {GOOD_LR: "completed", BAD_LR: "unfinished"}, status

    # 2. the same command resumes: the finished trial is kept, the other one runs and is stopped by ASHA
    run2 = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run2.returncode == 0, (run2.stdout + run2.stderr)[-3000:]
    assert "resuming the sweep" in run2.stderr + run2.stdout

    rows = {float(r["lr"]): r for r in csv.DictReader(open(exp / "results.csv"))}
    assert sorted(rows) == [BAD_LR, GOOD_LR]
    good, bad = rows[GOOD_LR], rows[BAD_LR]
    assert good["status"] == "completed" and int(good["frames"]) == 64
    assert bad["status"] == "stopped early" and int(bad["frames"]) < 64
    assert float(good["best val/loss"]) < float(bad["best val/loss"])
    assert (good_dir / "progress.csv").read_text() == good_history  # not rerun

    # the best config is a ready-to-run training config
    best = json.loads((exp / "best.json").read_text())
    assert best["params"] == {"lr": GOOD_LR} and Path(best["path"]).name == good_dir.name
    train_cfg = load_config(TrainConfig, [exp / "best_train_config.yaml"])
    assert train_cfg.lr == GOOD_LR and train_cfg.run_name == "tiny-best" and train_cfg.n_frames == 64
    assert (exp / "results.md").read_text().count("\n") == 4  # header, rule, 2 trials

    # TensorBoard per trial: Tune's events and the training loop's own
    for trial in exp.glob("trial_*"):
        assert list(trial.glob("events.out.tfevents.*")), trial
        assert list((trial / "train" / "tensorboard").glob("events.out.tfevents.*")), trial


@pytest.mark.slow
def test_a_trial_the_cluster_cannot_place_fails_before_starting(ray_cluster, tmp_path):
    cfg = load_config(SweepConfig, [REPO / "configs/sweep/debug.yaml"],
                      [f"storage_path={tmp_path}", "space={num_workers: {dist: choice, values: [1, 8]}}"])
    cfg.train_overrides.append(f"data={tmp_path}")
    with pytest.raises(ConfigError, match=r"one trial needs 4.01 CPU .* lower train.num_workers"):
        build_tuner(cfg)
    assert not (tmp_path / cfg.name).exists()  # nothing started, nothing written
