"""Metrics from per-step info records, confidence intervals, and the report writer (no Ray, no models)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from steve1_ray.evaluate.metrics import (MetricTracker, episode_metrics, mean_ci, player_position,
                                         target_metrics, wilson_ci)
from steve1_ray.evaluate.report import prompt_following, summarize, write_report


def crafter_info(step_wood: int, pos, wood: int = 0, sapling: int = 0, drink: int = 0):
    """A crafter-shaped info dict: cumulative achievement counts, inventory, grid position."""
    return {"achievements": {"collect_wood": step_wood, "collect_sapling": sapling, "collect_drink": drink,
                             "place_table": 0},
            "inventory": {"wood": wood, "sapling": sapling, "health": 9},
            "player_pos": np.array(pos)}


def test_scripted_episode_metrics_are_exact():
    # Walk 3 cells east, chop twice (second chop at step 5), build nothing, walk back 1 cell, then spend wood.
    infos = [crafter_info(0, (32, 32)), crafter_info(0, (33, 32)), crafter_info(0, (34, 32)),
             crafter_info(1, (35, 32), wood=1), crafter_info(2, (35, 32), wood=2),
             crafter_info(2, (34, 32), wood=2), crafter_info(2, (34, 32), wood=0)]
    m = episode_metrics(infos, targets=["collect_wood"])
    assert m["achievements/collect_wood"] == 2.0
    assert m["achievements/place_table"] == 0.0
    assert m["inventory_max/wood"] == 2.0  # the max, not the final 0
    assert m["travel/max_dist"] == 3.0  # the start is the first step's position
    assert m["travel/path_len"] == 4.0
    assert m["target/success"] == 1.0 and m["target/count"] == 2.0
    assert m["target/first_step"] == 4.0
    assert m["first_step/collect_wood"] == 4.0 and "first_step/place_table" not in m
    assert "paper/max_logs" not in m


def test_no_target_reached_and_unknown_target():
    infos = [crafter_info(0, (1, 1)), crafter_info(0, (1, 1))]
    m = episode_metrics(infos, targets=["collect_wood", "eat_cow"])
    assert m["target/success"] == 0.0 and m["target/count"] == 0.0
    assert math.isnan(m["target/first_step"])
    assert m["achievements/eat_cow"] == 0.0  # a target the backend never reports still shows up as 0
    assert "target/success" not in episode_metrics(infos)


def test_target_metrics_rescores_with_other_targets():
    infos = [crafter_info(0, (0, 0), drink=0), crafter_info(0, (0, 0), drink=1), crafter_info(3, (0, 0), drink=1)]
    m = episode_metrics(infos)
    assert target_metrics(m, ["collect_drink"]) == {"target/success": 1.0, "target/count": 1.0,
                                                    "target/first_step": 2.0}
    t = target_metrics(m, ["collect_wood", "collect_drink"])
    assert t["target/count"] == 4.0 and t["target/first_step"] == 2.0
    assert target_metrics(m, []) == {}


def test_minerl_paper_metrics_and_location_stats():
    def info(oak, birch, dirt, seeds, x, z):
        return {"inventory": {"oak_log": oak, "birch_log": birch, "dirt": dirt, "wheat_seeds": seeds, "stone": 5},
                "location_stats": {"xpos": x, "ypos": 64.0, "zpos": z}}
    infos = [info(0, 0, 0, 0, 10.0, 10.0), info(2, 1, 4, 0, 13.0, 14.0), info(2, 0, 1, 2, 10.0, 11.0)]
    m = episode_metrics(infos, paper_metrics=True)
    assert m["paper/max_logs"] == 3.0  # logs of all kinds summed, at the step they were held together
    assert m["paper/max_dirt"] == 4.0
    assert m["paper/max_seeds"] == 2.0
    assert m["travel/max_dist"] == pytest.approx(5.0)  # x-z plane, height ignored
    assert m["inventory_max/stone"] == 5.0


def test_player_position_forms():
    assert list(player_position({"player_pos": (3, 4)})) == [3.0, 4.0]
    assert list(player_position({"pos": [1.0, 70.0, 2.0]})) == [1.0, 2.0]
    assert player_position({"inventory": {}}) is None
    tracker = MetricTracker()
    tracker.update({"inventory": {}})
    assert tracker.result()["travel/max_dist"] == 0.0


def test_wilson_ci_known_values():
    p, lo, hi = wilson_ci(5, 10)
    assert p == 0.5
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    p, lo, hi = wilson_ci(0, 10)
    assert p == 0.0 and lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_ci(0, 0))
    with pytest.raises(ValueError, match="successes"):
        wilson_ci(11, 10)


def test_mean_ci_is_seeded_and_covers_the_mean():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    a, b = mean_ci(values, seed=3), mean_ci(values, seed=3)
    assert a == b
    mean, lo, hi = a
    assert mean == 4.0 and lo < mean < hi and lo >= 1.0 and hi <= 10.0
    assert mean_ci([2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert mean_ci([7.0, math.nan]) == (7.0, 7.0, 7.0)
    assert all(math.isnan(v) for v in mean_ci([]))
    # More data, narrower interval.
    rng = np.random.default_rng(0)
    small, big = rng.normal(size=10), rng.normal(size=1000)
    assert np.diff(mean_ci(big)[1:])[0] < np.diff(mean_ci(small)[1:])[0]


def _episodes():
    """Synthetic records: 'chop a tree' succeeds more at scale 6 than 2; the baseline rarely does."""
    eps = []
    rng = np.random.default_rng(0)
    for kind, goal, scale, p in [("text", "chop a tree", 2.0, 0.3), ("text", "chop a tree", 6.0, 0.9),
                                 ("text", "go explore", 2.0, 0.0), ("text", "go explore", 6.0, 0.0),
                                 ("unconditioned", "unconditioned", None, 0.1)]:
        targets = ["collect_wood"] if goal == "chop a tree" else []
        for k in range(10):
            wood = float(rng.random() < p) * (1 + k % 3)
            metrics = {"achievements/collect_wood": wood, "achievements/collect_drink": float(k % 2),
                       "travel/max_dist": float(k + (5 if goal == "go explore" else 0)),
                       "travel/path_len": float(2 * k)}
            if wood:
                metrics["first_step/collect_wood"] = float(10 + k)
            metrics.update(target_metrics(metrics, targets))
            eps.append({"goal": goal, "kind": kind, "cond_scale": scale, "episode": k, "world_seed": k,
                        "agent_seed": 100 + k, "targets": targets, "steps": 50, "died": False,
                        "metrics": metrics, "video": "videos/x.mp4" if k == 0 else None, "seconds": 0.1})
    return eps


def test_summarize_scores_baseline_against_each_goal():
    cells = summarize(_episodes())
    keys = [(c["goal"], c["kind"], c["cond_scale"]) for c in cells]
    assert keys == [("chop a tree", "unconditioned", None), ("chop a tree", "text", 2.0),
                    ("chop a tree", "text", 6.0), ("go explore", "unconditioned", None),
                    ("go explore", "text", 2.0), ("go explore", "text", 6.0)]
    eps = _episodes()
    base_rate = np.mean([e["metrics"]["achievements/collect_wood"] > 0 for e in eps if e["kind"] == "unconditioned"])
    assert cells[0]["stats"]["target/success"]["mean"] == pytest.approx(base_rate)
    hi_rate = np.mean([e["metrics"]["target/success"] for e in eps if e["cond_scale"] == 6.0 and e["targets"]])
    assert cells[2]["stats"]["target/success"]["mean"] == pytest.approx(hi_rate)
    assert "target/success" not in cells[3]["stats"]  # no targets for "go explore"
    assert cells[4]["stats"]["travel/max_dist"]["mean"] == pytest.approx(9.5)


def test_write_report_files(tmp_path):
    eps = _episodes()
    report = write_report(eps, tmp_path, seed=0, header_lines=["checkpoint: `x`"])
    text = report.read_text()
    assert "| `chop a tree` | collect_wood | 6 | 10 |" in text
    assert "| *no goal* | collect_wood | uncond. | 10 |" in text
    assert "## Which achievements each goal produces" in text
    assert "checkpoint: `x`" in text
    assert "(videos/x.mp4)" in text
    for name in ["plots/scale_chop_a_tree.png", "plots/scale_go_explore.png", "plots/cond_vs_uncond.png"]:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    raw = json.loads((tmp_path / "episodes.json").read_text())
    assert len(raw) == len(eps) and raw[0]["goal"] == "chop a tree"
    assert "**1 of 1** goals followed" in text  # "go explore" has no targets, so no row
    assert "| `chop a tree` | collect_wood | 0.30 | — | 6 | 1.90 [1.40, 2.40] | 6.3× | 6 |" in text
    following = json.loads((tmp_path / "following.json").read_text())
    assert [(r["goal"], r["followed_at"]) for r in following] == [("chop a tree", [6.0])]  # scale 2: 2x, but low end 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary[2]["stats"]["target/count"]["n"] == 10
    # Same input, same seed: the same report (CIs are seeded).
    other = tmp_path / "again"
    write_report(eps, other, seed=0, header_lines=["checkpoint: `x`"])
    assert (other / "report.md").read_text() == text
    with pytest.raises(ValueError, match="no episodes"):
        write_report([], tmp_path / "empty")


def _count_cell(goal, kind, scale, counts):
    st = summarize([{"goal": goal, "kind": kind, "cond_scale": scale, "episode": i, "targets": ["t"],
                     "metrics": {"achievements/t": float(c), **target_metrics({"achievements/t": float(c)}, ["t"])}}
                    for i, c in enumerate(counts)])
    return [c for c in st if c["kind"] == kind][0] | {"goal": goal}


def test_prompt_following_applies_every_rule():
    base = _count_cell("g", "unconditioned", None, [1, 1, 0, 2, 1, 1, 0, 2])  # mean 1.0
    cells = [base, _count_cell("g", "text", 0.0, [1] * 8),
             _count_cell("g", "text", 3.0, [2, 2, 3, 2, 2, 2, 3, 2]),   # 2.25 >= 2x, low end > 1, > scale 0
             _count_cell("g", "text", 6.0, [1, 1, 2, 1, 1, 1, 2, 1])]   # 1.25: < 2x
    (row,) = prompt_following(cells)
    assert row["followed"] and row["followed_at"] == [3.0] and row["best_scale"] == 3.0
    assert row["unconditioned"] == 1.0 and row["scale_0"] == 1.0 and row["ratio"] == pytest.approx(2.25)
    # Beating the baseline 2x is not enough when scale 0 already does better.
    cells[1] = _count_cell("g", "text", 0.0, [3] * 8)
    assert prompt_following(cells)[0]["followed_at"] == []
    # One lucky episode against a zero baseline: 2x "holds", the interval does not leave zero.
    zero = [_count_cell("h", "unconditioned", None, [0] * 12), _count_cell("h", "text", 0.0, [0] * 12),
            _count_cell("h", "text", 6.0, [0] * 11 + [1])]
    (row,) = prompt_following(zero)
    assert not row["followed"] and row["ratio"] == math.inf
    zero[2] = _count_cell("h", "text", 6.0, [1, 2, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1])
    assert prompt_following(zero)[0]["followed_at"] == [6.0]
