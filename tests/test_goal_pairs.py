"""benchmarks/goal_pairs.py: which goals the training frames get against what the demonstrator does (hand-made)."""
import collections
import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "goal_pairs", Path(__file__).resolve().parents[1] / "benchmarks" / "goal_pairs.py")
gp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gp)


def test_segment_goals_and_hindsight_goals_are_paired_with_what_is_pursued():
    # 6 frames: the demonstrator drinks (0-2) then chops (3-5); the clip ending at frame 2 looks like wood (a
    # mislabelled drink), the clip ending at frame 5 like wood. Frames 0-2 are trained on frame 2's clip (their
    # segment's end), 3-4 on frame 5's; frame 5 has no segment goal: hindsight, clipped to the last frame.
    pursued = np.array(["collect_drink"] * 3 + ["collect_wood"] * 3, object)
    nearest = np.array(["collect_drink", "collect_drink", "collect_wood", "explore", "explore", "collect_wood"])
    given = np.array([2, 2, 2, 5, 5, -1])
    pairs = gp.episode_pairs(pursued, nearest, given, np.random.default_rng(0), 15, 40)
    assert pairs == collections.Counter({("collect_wood", "collect_drink"): 3, ("collect_wood", "collect_wood"): 3})
    out = gp.tables(pairs)
    assert out["given"] == {"collect_wood": {"frames": 6, "collect_drink": 0.5, "collect_wood": 0.5}}
    assert out["pursued"] == {"collect_drink": {"frames": 3, "collect_wood": 1.0},
                              "collect_wood": {"frames": 3, "collect_wood": 1.0}}


def test_frames_without_a_segment_goal_get_the_loader_s_hindsight_goal():
    """As `steve1_ray.train.relabel`: goal timesteps spaced 15..39 apart, none before frame 15 (the first whole
    clip), each frame conditioned on the first goal g with t <= g + 1; a segment goal before frame 15 is ignored."""
    from steve1_ray.train.relabel import goal_index_per_timestep, goal_timesteps

    n = 200
    frames = np.arange(n)
    given = np.full(n, -1)
    given[:5] = 3  # a "segment goal" whose clip is not whole yet
    pairs = gp.episode_pairs(np.array([f"p{t}" for t in frames], object), np.array([f"c{t}" for t in frames], object),
                             given, np.random.default_rng(1), 15, 40)
    assert sum(pairs.values()) == n and all(k == 1 for k in pairs.values())
    goal_of = {int(p[1:]): int(c[1:]) for c, p in pairs}
    expected = goal_index_per_timestep(goal_timesteps(n, 15, 40, np.random.default_rng(1)), frames)
    assert [goal_of[t] for t in frames] == expected.tolist()
    assert all(g >= max(t - 1, 15) for t, g in goal_of.items())  # a future clip (or the frame's own, just after)
    goals = sorted(set(goal_of.values()))
    assert goals[0] >= 15 and goals[-1] == n - 1 and all(b - a < 40 for a, b in zip(goals[:-1], goals[1:-1]))
    assert gp.episode_pairs(np.array([], object), np.array([], object), np.array([]), np.random.default_rng(0),
                            15, 40) == collections.Counter()
