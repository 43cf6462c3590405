"""Prior (CVAE) training: pairs files (original data.pkl, .npz), seeded split, loss falls, released format."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from steve1_ray.config import ConfigError
from steve1_ray.models.prior import load_prior
from steve1_ray.train.prior import PriorConfig, load_pairs, main, split_pairs, train_prior

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)


def _pairs(n=400, d=32, seed=0):
    """Visual embeddings that depend on the text (a fixed linear map) plus a little noise: learnable."""
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((d, d)).astype(np.float32) / np.sqrt(d)
    visual = (text @ w + 0.05 * rng.standard_normal((n, d))).astype(np.float32)
    return text, visual


def test_prior_training_loss_falls_and_saves_released_format(tmp_path):
    text, visual = _pairs()
    cfg = PriorConfig(pairs="unused", hidden_dim=64, latent_dim=16, batch_size=64, epochs=12, n_val=50,
                      lr=3e-3, out=str(tmp_path / "prior.pt"))
    summary = train_prior(cfg, text, visual, log=lambda *_: None)
    hist = summary["history"]
    assert hist[-1]["val/mse"] < 0.5 * hist[0]["val/mse"]
    assert summary["best_val_loss"] == min(h["val/loss"] for h in hist)
    prior = load_prior(tmp_path / "prior.pt")                      # strict, dims from the shapes
    assert (prior.input_dim, prior.hidden_dim, prior.latent_dim) == (32, 64, 16)
    sd = torch.load(tmp_path / "prior.pt", weights_only=True)
    assert isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values())
    best = json.loads((tmp_path / "prior.json").read_text())
    assert best["best_epoch"] == summary["best_epoch"] and best["n_val"] == 50
    # the saved model is the best epoch's, not the last: its val loss (fixed noise) matches the record
    from steve1_ray.train.prior import evaluate
    (_, _), (va_t, va_v) = split_pairs(text, visual, 50, cfg.seed)
    val = evaluate(prior.train(), torch.from_numpy(va_t), torch.from_numpy(va_v), 1.0, 64, seed=cfg.seed + 1)
    assert val["loss"] == pytest.approx(summary["best_val_loss"], rel=1e-4)


def test_split_is_seeded_and_disjoint():
    text, visual = _pairs(100)
    (a_t, _), (b_t, _) = split_pairs(text, visual, 200, seed=3)
    (c_t, _), (d_t, _) = split_pairs(text, visual, 200, seed=3)
    assert len(b_t) == 20 and len(a_t) == 80                          # at most a fifth held out
    assert np.array_equal(b_t, d_t)
    assert not {r.tobytes() for r in a_t} & {r.tobytes() for r in b_t}


def test_pairs_files_original_pkl_npz_and_refused_pickles(tmp_path):
    text, visual = _pairs(10, 8)
    orig = tmp_path / "data.pkl"   # the original layout: lists of (1, D) arrays
    orig.write_bytes(pickle.dumps({"text_embeddings": [t[None] for t in text],
                                   "visual_embeddings": [v[None] for v in visual]}))
    t, v = load_pairs(str(orig))
    assert np.array_equal(t, text) and np.array_equal(v, visual)
    np.savez(tmp_path / "p.npz", text_embeddings=text, visual_embeddings=visual)
    t2, _ = load_pairs(str(tmp_path / "p.npz"))
    assert np.array_equal(t2, text)

    class Evil:
        def __reduce__(self):  # os.getcwd: harmless, and not patched by anyone (Ray's tqdm patches print)
            return (os.getcwd, ())

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"text_embeddings": Evil(), "visual_embeddings": []}))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle (posix|os)\.getcwd"):
        load_pairs(str(tmp_path / "evil.pkl"))
    np.savez(tmp_path / "bad.npz", text_embeddings=text, visual_embeddings=visual[:5])
    with pytest.raises(ValueError, match="pair up one to one"):
        load_pairs(str(tmp_path / "bad.npz"))


def test_bad_prior_configs(capsys):
    with pytest.raises(ConfigError, match="give pairs="):
        PriorConfig()
    with pytest.raises(ConfigError, match="n_val=0 must be >= 1"):
        PriorConfig(pairs="x", n_val=0)
    assert main(["--config", "debug", "pairs=/nonexistent/data.pkl"]) == 2
    assert "pairs file /nonexistent/data.pkl not found" in capsys.readouterr().err


def test_train_prior_job_script(tmp_path):
    text, visual = _pairs(200, 16)
    np.savez(tmp_path / "pairs.npz", text_embeddings=text, visual_embeddings=visual)
    out = tmp_path / "w" / "prior.pt"
    proc = subprocess.run([sys.executable, str(REPO / "jobs/train_prior.py"), "--config", "debug",
                           f"pairs={tmp_path / 'pairs.npz'}", f"out={out}", "epochs=2"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "best val loss" in proc.stdout and out.exists() and out.with_suffix(".yaml").exists()
    assert load_prior(out).latent_dim == 32
