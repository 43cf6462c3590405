"""`steve1 goal-axes` (steve1_ray.world.facing): the goal-space directions that say which way the player faces."""
from __future__ import annotations

import json

import numpy as np
import pytest

from steve1_ray.world.config import WorldConfig
from steve1_ray.world.facing import FACINGS, facing_axes, facing_embeddings, main


def test_the_frame_shows_the_facing_and_rendering_it_again_changes_nothing_even_at_night():
    env = WorldConfig(tree_logs=4).make(max_steps=50)
    env.reset(seed=3)
    player = env.player
    frames = []
    for facing in FACINGS:
        player.facing = facing
        frames.append(env.render_frame())
    assert all(f.shape == frames[0].shape and f.dtype == np.uint8 for f in frames)
    assert len({f.tobytes() for f in frames}) == 4  # sprite and outline move with the facing
    env.world.daylight = 0.2  # night: crafter draws fresh noise into every rendered frame
    rng = env._core._local_view.rng
    before = rng.get_state()[1].copy()
    first = env.render_frame()
    np.testing.assert_array_equal(env.render_frame(), first)  # the same noise: only what the probe changed differs
    np.testing.assert_array_equal(rng.get_state()[1], before)  # the episode's later frames are not shifted
    env.close()


def test_a_still_clip_is_what_encode_video_gives_for_the_frame_repeated():
    from steve1_ray.models.loading import load_embedder

    model = load_embedder("debug", None)
    world = WorldConfig(tree_logs=4)
    e = facing_embeddings(model, world, 1, 10, 10, 900)  # one state (step 5)
    env = world.make(max_steps=11)
    env.reset(seed=900)
    from steve1_ray.world.demonstrators import Demonstrator

    demo = Demonstrator(env, seed=900)
    demo.reset()
    for _ in range(6):
        env.step(demo.act())
    import cv2

    env.player.facing = FACINGS[2]
    frame = cv2.resize(env.render_frame(), (256, 160), interpolation=cv2.INTER_LINEAR)
    clip = np.repeat(frame[None, None], 16, axis=1)
    np.testing.assert_allclose(e[0, 2], model.encode_video(clip)[0].numpy(), rtol=1e-4, atol=1e-5)


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
    for bad in (["embedder=debug", f"out={out}", "k=4"], ["embedder=debug", f"out={tmp_path / 'axes.json'}"], ["embedder=debug"], ["embedder=debug", f"out={out}", "every=0"],
                ["embedder=debug", f"out={out}", "world.backend=minerl"]):
        assert main(bad) == 2, bad
    assert main(["embedder=nowhere.pth", f"out={out}", "episodes=1", "steps=20"]) == 2


def test_goal_axes_data_must_be_a_dataset_this_embedder_made(tmp_path):
    from steve1_ray.train.synthetic import make_dataset

    out = tmp_path / "facing.npy"
    args = ["embedder=debug", f"out={out}", "episodes=1", "steps=10", "every=10"]
    assert main(args + [f"data={tmp_path / 'nowhere'}"]) == 2
    other = make_dataset(str(tmp_path / "shards"), n_episodes=2, n_frames=32, embed_dim=16)  # not the embedder's width
    assert main(args + [f"data={other}"]) == 2
