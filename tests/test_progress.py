"""Progress lines (steve1_ray/progress.py): durations, ETA arithmetic, when a Meter prints, plain lines in a file;
and that the prior's training, which runs in the driver, prints them."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from steve1_ray.progress import Meter, duration, number, rate, seconds_left

REPO = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_durations_and_numbers():
    assert [duration(s) for s in (0, 0.4, 45, 59.6, 60, 182, 3599, 3600, 3900, 100_000)] == \
        ["0s", "0s", "45s", "1m00s", "1m00s", "3m02s", "59m59s", "1h00m", "1h05m", "27h46m"]
    assert [duration(s) for s in (None, math.nan, math.inf, -1)] == ["?"] * 4
    assert [number(x) for x in (0.52, 7.31, 42.4, 2100, 1_500_000)] == ["0.52", "7.3", "42", "2.1k", "1.5M"]
    assert rate(2100, "frames") == "2.1k frames/s"


def test_eta_is_the_rate_so_far():
    assert seconds_left(25, 100, elapsed_s=10) == 30              # 2.5 per second, 75 left
    assert seconds_left(60, 100, elapsed_s=10, done_at_start=50) == 40  # a resumed run: only 10 done now
    assert seconds_left(100, 100, elapsed_s=10) == 0
    assert math.isnan(seconds_left(0, 100, elapsed_s=10)) and math.isnan(seconds_left(5, 100, elapsed_s=0))


def test_meter_prints_every_tenth_and_every_interval_and_the_end():
    clock, lines = Clock(), []
    meter = Meter("record", "episodes", 40, every_s=60, write=lines.append, clock=clock)
    printed = []
    for done in range(1, 41):
        clock.t += 1
        if meter.update(done, "frames 7") is not None:
            printed.append(done)
    assert printed == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]       # each tenth, the last one included
    assert lines[0] == "[record] episodes 4/40 (10%)  frames 7  elapsed 4s  ETA 36s"
    assert lines[-1] == "[record] episodes 40/40 (100%)  frames 7  elapsed 40s  ETA 0s"

    slow = Meter("train", "step", 1000, every_s=60, write=lines.append, clock=clock)
    clock.t += 59
    assert slow.update(1) is None                                  # neither a tenth nor a minute
    clock.t += 1
    assert slow.update(2, eta_s=125) == "[train] step 2/1,000 (0%)  elapsed 1m00s  ETA 2m05s"  # the caller's ETA
    assert slow.update(3, force=True).startswith("[train] step 3/1,000")
    slow.say("first step done 12s after the start")
    assert lines[-1] == "[train] first step done 12s after the start"


def test_meter_lines_are_plain_lines_in_a_file(tmp_path):
    """Not a terminal (a pipe, a log file): whole lines, no '\\r' redraws."""
    script = ("from steve1_ray.progress import Meter\n"
              "m = Meter('dataset', 'episodes', 5)\n"
              "for i in range(1, 6): m.update(i, 'frames 10')\n")
    log = tmp_path / "out.txt"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", script], stdout=f, check=True, cwd=REPO, timeout=60)
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 5 and all(line.startswith("[dataset] episodes ") and " ETA " in line for line in lines)


def test_prior_training_prints_epoch_progress_with_an_eta(tmp_path, capsys):
    from steve1_ray.train.prior import PriorConfig, train_prior

    rng = np.random.default_rng(0)
    text = rng.standard_normal((100, 8)).astype(np.float32)
    cfg = PriorConfig(pairs="unused", hidden_dim=16, latent_dim=8, batch_size=32, epochs=20, n_val=20,
                      out=str(tmp_path / "prior.pt"))
    train_prior(cfg, text, text.copy())
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[train-prior] epoch ")]
    assert len(lines) == 10 and lines[-1].startswith("[train-prior] epoch 20/20 (100%)  train loss ")
    assert all(" val loss " in line and " ETA " in line for line in lines)


@pytest.mark.slow
def test_record_job_prints_progress_lines_with_an_eta(ray_cluster, tmp_path, capsys):
    """On Ray with workers' output not forwarded (the fixture's log_to_driver=False)."""
    from steve1_ray.world.record import main

    assert main([f"out={tmp_path / 'world'}", "episodes=2", "max_steps=40", "seed=5"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[record] episodes ")]
    assert lines[-1].startswith("[record] episodes 2/2 (100%)  frames ") and " ETA 0s" in lines[-1]


def test_the_first_step_line_names_where_the_start_up_went():
    from steve1_ray.train.run import first_step_line

    n = {"first_step_s": 1.5, "worker_s": 9.0, "setup_s": {"data": 2.0, "model": 0.5, "validation": 5.0}}
    assert first_step_line(30.0, n, before_s=4.3) == (
        "first step done 34.3s after `steve1 train` started: driver 4.3s (imports, Ray cluster), Ray 21.0s (worker "
        "group: processes, imports, torch.distributed), data 2.0s, model 0.5s, validation 5.0s, the step 1.5s")
    local = {**n, "workers": 0}  # num_workers=0: the loop runs in this process
    assert first_step_line(30.0, local).startswith("first step done 30.0s after the start: local mode 21.0s (")
    assert first_step_line(75.0, {"first_step_s": 2.0}) == (  # a worker without the setup clock
        "first step done 75.0s after the start: 73.0s setting up (workers, data, model), 2.0s the step itself")


@pytest.mark.slow
def test_dataset_job_prints_progress_lines_with_an_eta(ray_cluster, tmp_path, capsys):
    from steve1_ray.data.pipeline import DataConfig, generate_dataset
    from steve1_ray.data.synthetic import write_episode

    for i in range(2):
        write_episode(tmp_path / "rec" / f"ep{i}", 30, seed=i)
    generate_dataset(DataConfig(output=str(tmp_path / "ds"), sources=[f"local:{tmp_path / 'rec'}"], min_frames=16,
                                segment_len=16, frame_codec="png", embedder="none"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[dataset] episodes ")]
    assert lines[-1].startswith("[dataset] episodes 2/2 (100%)  frames ") and " ETA 0s" in lines[-1]


@pytest.mark.slow
def test_training_prints_progress_on_the_driver_with_workers_output_off(ray_cluster, tmp_path, capsys):
    """One Ray Train worker whose own lines stay in Ray's log files (the fixture's log_to_driver=False, as in the
    quick start): the driver prints the steps, the first step's latency and the ETA."""
    from steve1_ray.train.config import load_train_config
    from steve1_ray.train.run import run_training
    from steve1_ray.train.synthetic import make_dataset

    data = make_dataset(str(tmp_path / "shards"), n_episodes=4, n_frames=48, embed_dim=16, seed=0)
    cfg = load_train_config("debug", [f"data={data}", f"storage_path={tmp_path / 'runs'}", "run_name=progress",
                                      "num_workers=1", "T=16", "trunc_t=8", "batch_size=2", "grad_accum=1",
                                      "n_frames=256", "log_every_steps=1", "val_every_steps=4", "val_fraction=0.25",
                                      "warmup_frames=32"])
    assert run_training(cfg).error is None
    out = capsys.readouterr().out
    assert "[train] 16 optimizer steps of 16 frames on 1 Ray Train worker(s); starting" in out
    # where the time to the first step went: Ray's worker group, then each of the worker's setup phases
    first = re.search(r"\[train\] first step done ([\d.]+)s after the start: Ray ([\d.]+)s \(worker group[^)]*\), "
                      r"data ([\d.]+)s, model ([\d.]+)s, resume ([\d.]+)s, validation ([\d.]+)s, "
                      r"the step ([\d.]+)s$", out, re.M)
    assert first, out
    total, *parts = map(float, first.groups())
    assert abs(total - sum(parts)) <= 0.1 * len(parts) and parts[0] > 0  # the parts add up (rounded to 0.1 s)
    steps = [line for line in out.splitlines() if line.startswith("[train] step ")]
    assert steps[0].startswith("[train] step 2/16 (12%)  frames 32/256  loss ")  # the first tenth
    assert steps[-1].startswith("[train] step 16/16 (100%)  frames 256/256  loss ") and " val " in steps[-1]
    assert all(" frames/s  elapsed " in line and " ETA " in line for line in steps) and len(steps) >= 10
    assert "step 16 | frames 256/256" not in out  # the worker's own line stayed in its log
