"""benchmarks/gpu_check.sh: the dry run goes through every section at tiny size on CPU, so the GPU check never rots
(the real run needs a GPU; benchmarks/RESULTS.md, "GPU check"); a section over its budget is killed and recorded."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


def _run(*args, timeout=600):
    return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHON": sys.executable})


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_dry_run_measures_every_section(tmp_path):
    r = _run("--cpu-dry-run", "--out", str(tmp_path))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "cpu-dry-run" and list(report["sections"]) == ["train", "serve", "mineclip"]
    train, serve, mineclip = (report["sections"][s] for s in ("train", "serve", "mineclip"))
    assert all(s["ok"] for s in (train, serve, mineclip))

    # the paper preset with tiny overrides: bf16, grad_accum micro-batches per step, FLOPs counted by torch
    assert (train["precision"], train["grad_accum"], train["frames_per_step"]) == ("bf16", 2, 2 * 8 * 2)
    for key in ("frames_per_s", "steps_per_s", "flops_per_step", "achieved_tflops", "peak_tflops", "mfu"):
        assert _number(train[key]), (key, train[key])
    assert train["mfu"] == pytest.approx(train["flops_per_step"] * train["steps_per_s"] / 1e12 / train["peak_tflops"])

    assert [run["sessions"] for run in serve["runs"]] == [1, 2]
    for run in serve["runs"]:
        assert all(_number(run[k]) for k in ("actions_per_s", "p50_ms", "p99_ms", "max_batch")), run

    for key in ("cached_frames_per_s", "per_window_frames_per_s", "speedup"):
        assert _number(mineclip[key]), (key, mineclip[key])
    assert mineclip["dtype"] == "bf16" and mineclip["max_abs_diff"] < 0.05  # the two paths agree under autocast

    md = (tmp_path / "gpu_check.md").read_text()
    assert "| section | setup | result | wall s |" in md
    assert all(f"| {s} |" in md for s in ("train", "serve", "mineclip")) and "MFU" in md and "failed" not in md


def test_a_section_over_its_budget_is_killed_and_recorded(tmp_path):
    r = _run("--cpu-dry-run", "--out", str(tmp_path), "--sections", "mineclip", "--mineclip-budget-s", "0.5",
             timeout=120)
    assert r.returncode == 1
    section = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["mineclip"]
    assert not section["ok"] and "killed after its budget of 0.5 s" in section["error"]
    assert "| mineclip | - | **failed**" in (tmp_path / "gpu_check.md").read_text()


def test_peak_is_looked_up_by_device_name_or_given():
    assert gpu_check.peak_tflops("NVIDIA H200", None, False)[0] == 989.0
    assert gpu_check.peak_tflops("NVIDIA H200", 500.0, False) == (500.0, "--peak-tflops")
    peak, why = gpu_check.peak_tflops("Some Future GPU", None, False)
    assert peak is None and "--peak-tflops" in why  # no MFU rather than a wrong one


def test_the_train_profile_names_the_operators_that_take_the_step(tmp_path):
    r = _run("--cpu-dry-run", "--out", str(tmp_path), "--sections", "train", "--train-profile", "4")
    assert r.returncode == 0, r.stdout + r.stderr
    train = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["train"]
    ops = train["top_ops"]
    assert len(ops) == 4 and all(_number(o["self_ms"]) and o["calls"] >= 1 for o in ops)
    assert [o["self_ms"] for o in ops] == sorted((o["self_ms"] for o in ops), reverse=True)
    assert 0 < sum(o["share"] for o in ops) <= 1.0 + 1e-9
    assert f"| `{ops[0]['op']}` |" in (tmp_path / "gpu_check.md").read_text()
