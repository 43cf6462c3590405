"""Bad numbers and crashed writes in training: a non-finite step is skipped on every rank and counted, too many
in a row stop the run with a clear error, non-finite weights are never written, checkpoints appear complete or
not at all, and resuming never unpickles code (`weights_only=True`)."""
from __future__ import annotations

import copy
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from steve1_ray.models.policy import build_policy
from steve1_ray.train.checkpoint import (NonFiniteError, Progress, check_finite, export_weights, load_checkpoint,
                                         rng_state, save_checkpoint, set_rng_state)
from steve1_ray.train.config import TrainConfig
from steve1_ray.train.data import InMemoryEpisodes, SequenceDataset, collate
from steve1_ray.train.optim import build_optimizer
from steve1_ray.train.step import optimizer_step

torch.set_num_threads(1)
D = 16


def _batch(nan_goals: bool):
    rng = np.random.default_rng(0)
    eps = {f"e{i}": {"frames": rng.integers(0, 255, (40, 128, 128, 3), dtype=np.uint8),
                     "buttons": rng.integers(0, 8641, 40), "camera": rng.integers(0, 121, 40),
                     "embeds": np.full((40, D), np.nan, np.float32) if nan_goals
                     else rng.standard_normal((40, D)).astype(np.float32)} for i in range(2)}
    src = InMemoryEpisodes(eps)
    ds = SequenceDataset(src, src.episode_ids(), T=16, min_btwn_goals=15, max_btwn_goals=30, p_uncond=0.0, seed=0)
    return [collate([ds.load(0, 0), ds.load(1, 0)])]


def _step(policy, opt, batch, scaler=None, precision="fp32"):
    cfg = TrainConfig(T=16, trunc_t=8, batch_size=2, grad_accum=1, precision=precision, max_grad_norm=5.0,
                      min_btwn_goals=15, max_btwn_goals=30)
    return optimizer_step(policy, policy, opt, scaler, batch, [policy.initial_state(2)], 0, cfg,
                          torch.device("cpu"), lr=1e-3)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_non_finite_step_changes_no_weight(precision):
    torch.manual_seed(0)
    policy = build_policy("debug", embed_dim=D)
    opt = build_optimizer(policy, 1e-3, 0.01)
    scaler = torch.amp.GradScaler("cpu") if precision == "fp16" else None
    good = _batch(False)
    overflows = 0
    while _step(policy, opt, good, scaler, precision)["skipped"]:  # fp16: GradScaler finds its scale first
        overflows += 1
        assert overflows < 10
    assert overflows == (4 if precision == "fp16" else 0)  # 65536 -> 4096, each skip an "overflow", not a NaN
    before = copy.deepcopy(policy.state_dict())
    opt_before = copy.deepcopy(opt.state_dict())
    out = _step(policy, opt, _batch(True), scaler, precision)  # NaN goal embeddings -> NaN loss and gradients
    assert out["skipped"] and not out.get("overflow") and not math.isfinite(out["grad_norm"]) and out["frames"] == 0
    for name, value in policy.state_dict().items():
        assert torch.equal(value, before[name]), name  # without the guard: NaN in every trained weight
    assert all(p.grad is None for p in policy.parameters())
    assert opt.state_dict()["state"][0]["step"] == opt_before["state"][0]["step"]
    assert not _step(policy, opt, _batch(False), scaler, precision)["skipped"]  # training goes on
    check_finite(policy, "test")


def test_non_finite_weights_are_never_written(tmp_path):
    policy = build_policy("debug", embed_dim=D)
    opt = build_optimizer(policy, 1e-3, 0.0)
    with torch.no_grad():
        policy.net.final_ln.weight[0] = float("nan")
    with pytest.raises(NonFiniteError, match="net.final_ln.weight"):
        save_checkpoint(tmp_path / "checkpoint_step1", policy, opt, None, Progress(steps=1), TrainConfig())
    with pytest.raises(NonFiniteError):
        export_weights(policy, str(tmp_path / "out.weights"))
    assert not any(tmp_path.iterdir())


def test_a_checkpoint_is_complete_or_absent(tmp_path, monkeypatch):
    policy = build_policy("debug", embed_dim=D)
    opt = build_optimizer(policy, 1e-3, 0.0)
    real_save = torch.save

    def dies_on_rng(obj, path, *a, **kw):  # the process dies while writing the last tensor file
        if str(path).endswith("rng.pt"):
            raise OSError("disk full")
        return real_save(obj, path, *a, **kw)

    monkeypatch.setattr(torch, "save", dies_on_rng)
    target = tmp_path / "checkpoints" / "checkpoint_step000000004"
    with pytest.raises(OSError):
        save_checkpoint(target, policy, opt, None, Progress(steps=4), TrainConfig())
    assert not target.exists()  # before: progress.json (the "complete" marker) was written first, in place
    assert not list((tmp_path / "checkpoints").glob("checkpoint_step*/training_state/progress.json"))
    monkeypatch.setattr(torch, "save", real_save)
    save_checkpoint(target, policy, opt, None, Progress(steps=4), TrainConfig())
    assert json.loads((target / "training_state" / "progress.json").read_text())["steps"] == 4
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary folder left behind


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_resuming_never_unpickles_code(tmp_path, capsys):
    policy = build_policy("debug", embed_dim=D)
    opt = build_optimizer(policy, 1e-3, 0.0)
    _step(policy, opt, _batch(False))
    ckpt = save_checkpoint(tmp_path / "ckpt", policy, opt, None, Progress(steps=1, frames=32), TrainConfig())
    # a normal checkpoint round-trips exactly, RNG states included, with weights_only=True
    np.random.seed(5)
    expected = np.random.random(3)
    np.random.seed(5)
    state = rng_state()
    set_rng_state(torch.load(_saved(tmp_path / "rng.pt", state), weights_only=True))
    assert np.array_equal(np.random.random(3), expected)
    progress = load_checkpoint(ckpt, build_policy("debug", embed_dim=D), build_optimizer(policy, 1e-3, 0.0), None)
    assert progress.steps == 1 and progress.skipped_steps == 0
    # a hostile rng.pt (shared storage) is not run: the resume goes on without it and says so
    marker = tmp_path / "pwned"
    torch.save({"torch": _Payload(str(marker))}, ckpt / "training_state" / "rng.pt")
    load_checkpoint(ckpt, build_policy("debug", embed_dim=D), build_optimizer(policy, 1e-3, 0.0), None)
    assert not marker.exists() and "not restored" in capsys.readouterr().out
    # a hostile optimizer.pt is refused outright
    torch.save({"optimizer": _Payload(str(marker))}, ckpt / "training_state" / "optimizer.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(ckpt, build_policy("debug", embed_dim=D), build_optimizer(policy, 1e-3, 0.0), None)
    assert not marker.exists()


def _saved(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_a_run_resumed_with_other_cpu_kernels_is_warned_and_old_checkpoints_still_load():
    """steve1_ray.numerics: a checkpoint records torch's CPU kernels; resuming with others changes the rounding."""
    from steve1_ray.train.checkpoint import Progress, kernels_note

    assert kernels_note("AVX2", "AVX2") is None and kernels_note("", "AVX512") is None  # older checkpoints: silent
    note = kernels_note("AVX2", "AVX512")
    assert note.startswith("warning: this run last (re)started with torch's AVX2 CPU kernels and resumes with AVX512")
    old = '{"frames": 32, "steps": 1, "epoch": 0, "group": 1, "best_val_loss": 3.0}'  # before cpu_kernels existed
    assert Progress.from_json(old).cpu_kernels == "" and Progress.from_json(old).steps == 1
    assert Progress.from_json(Progress(cpu_kernels="AVX2").to_json()).cpu_kernels == "AVX2"
