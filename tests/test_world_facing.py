"""`steve1 goal-axes` (steve1_ray.world.facing): the goal-space directions that say which way the player faces."""
from __future__ import annotations

import json

import numpy as np
import pytest

from steve1_ray.world.config import WorldConfig
from steve1_ray.world.facing import FACINGS, facing_axes, facing_embeddings, main


def test_the_frame_shows_the_facing_and_the_probe_leaves_the_state_as_it_was():
    env = WorldConfig(tree_logs=4).make(max_steps=50)
    env.reset(seed=3)
    player = env.player
    was = tuple(player.facing)
    frames = []
    for facing in FACINGS:
        player.facing = facing
        frames.append(env.render_frame())
    player.facing = was
    assert all(f.shape == frames[0].shape and f.dtype == np.uint8 for f in frames)
    assert len({f.tobytes() for f in frames}) == 4  # sprite and outline move with the facing
    player.facing = was
    np.testing.assert_array_equal(env.render_frame(), env.render_frame())
    env.close()


def test_axes_are_orthonormal_deterministic_and_hold_the_facing_differences():
    from steve1_ray.models.loading import load_embedder

    world = WorldConfig(tree_logs=4)
    axes, summary = facing_axes("debug", world, k=3, episodes=1, steps=40, every=10)
    again, _ = facing_axes("debug", world, k=3, episodes=1, steps=40, every=10)
    np.testing.assert_array_equal(axes, again)
    assert axes.shape[0] == 3 and axes.dtype == np.float32
    np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-5)
    assert summary["states"] == 4 and 0 < summary["clip_variance_share"] <= 1 and 0 < summary["difference_share"] <= 1
    # one state: its four facings differ in at most three directions, and the three axes hold all of it
    one, single = facing_axes("debug", world, k=3, episodes=1, steps=10, every=10)
    assert single["states"] == 1 and single["difference_share"] == pytest.approx(1.0, abs=1e-4)
    e = facing_embeddings(load_embedder("debug", None), world, 1, 10, 10, 900)
    assert e.shape == (1, 4, axes.shape[1])
    diff = (e - e.mean(1, keepdims=True)).reshape(-1, e.shape[-1])
    assert np.abs(diff).max() > 0  # the embedder does see the facing
    np.testing.assert_allclose(diff - diff @ one.T @ one, 0, atol=1e-4 * np.abs(diff).max())


def test_the_job_writes_axes_and_a_summary_and_refuses_bad_arguments(tmp_path, capsys):
    out = tmp_path / "axes" / "facing.npy"
    assert main(["embedder=debug", f"out={out}", "k=2", "episodes=1", "steps=30", "every=10"]) == 0
    axes = np.load(out)
    assert axes.shape[0] == 2
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["k"] == 2 and summary["out"] == str(out)
    assert "goal-axes:" in capsys.readouterr().out
    assert not list(out.parent.glob("*.tmp*"))
    for bad in (["embedder=debug", f"out={out}", "k=4"], ["embedder=debug"], ["embedder=debug", f"out={out}", "every=0"],
                ["embedder=debug", f"out={out}", "world.backend=minerl"]):
        assert main(bad) == 2, bad
    assert main(["embedder=nowhere.pth", f"out={out}", "episodes=1", "steps=20"]) == 2
