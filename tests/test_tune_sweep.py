"""A tiny real sweep: the job runs on the test cluster and is interrupted with Ctrl-C, then resumed.

Two trials of the debug policy on a synthetic dataset, run one at a time: a good learning rate, then a
hopeless one. The first run of `tune/sweep.py` is interrupted (SIGINT) right after the good trial finishes;
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

from steve1_ray.config import load_config
from steve1_ray.train import synthetic
from steve1_ray.train.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
GOOD_LR, BAD_LR = 3e-3, 1e-7


def _sweep_cmd(storage: Path, data: str) -> list[str]:
    return [sys.executable, str(REPO / "tune" / "sweep.py"), "--config", str(REPO / "tune/spaces/debug.yaml"),
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
    from steve1_ray.config import ConfigError
    from steve1_ray.sweep import SweepConfig, build_tuner

    cfg = load_config(SweepConfig, [REPO / "tune/spaces/debug.yaml"],
                      [f"storage_path={tmp_path}", "space={num_workers: {dist: choice, values: [1, 8]}}"])
    cfg.train_overrides.append(f"data={tmp_path}")
    with pytest.raises(ConfigError, match=r"one trial needs 4.01 CPU .* lower train.num_workers"):
        build_tuner(cfg)
    assert not (tmp_path / cfg.name).exists()  # nothing started, nothing written
