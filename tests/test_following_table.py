"""benchmarks/following_table.py: the report's rule re-applied to a subset of an evaluation's guided scales."""
import importlib.util
import json
from pathlib import Path

import pytest

from steve1_ray.evaluate.metrics import target_metrics
from steve1_ray.evaluate.report import write_report

_spec = importlib.util.spec_from_file_location(
    "following_table", Path(__file__).resolve().parents[1] / "benchmarks" / "following_table.py")
ft = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ft)


def _episodes(goal, kind, scale, counts, paraphrase_of=None):
    return [{"goal": goal, "kind": kind, "cond_scale": scale, "episode": i, "targets": ["t"],
             "paraphrase_of": paraphrase_of,
             "metrics": {"achievements/t": float(c), **target_metrics({"achievements/t": float(c)}, ["t"])}}
            for i, c in enumerate(counts)]


@pytest.fixture
def evaluation(tmp_path):
    """One prompt followed only at scale 6 (at scale 2 it is 2.5x the unconditioned agent but below scale 0), and its
    phrasing (a text goal with `paraphrase_of`, as the evaluation records it) followed only at scale 2."""
    eps = (_episodes("unconditioned", "unconditioned", None, [1, 1, 0, 2, 1, 1, 0, 2])   # mean 1
           + _episodes("g", "text", 0.0, [3] * 8)
           + _episodes("g", "text", 2.0, [2, 3, 2, 3, 2, 3, 2, 3])                         # 2.5: 2x, not > scale 0
           + _episodes("g", "text", 6.0, [4, 4, 5, 4, 4, 4, 5, 4])                         # 4.25: followed
           + _episodes("p", "text", 0.0, [2] * 8, "g")
           + _episodes("p", "text", 2.0, [3] * 8, "g")                                     # followed
           + _episodes("p", "text", 6.0, [0] * 8, "g"))
    write_report(eps, tmp_path, seed=0)
    return tmp_path


def test_all_scales_agree_with_the_report_and_a_subset_changes_the_verdict(evaluation, capsys):
    full = {r["goal"]: r for r in ft.rows(ft.load_cells(evaluation))}
    report = {r["goal"]: r for r in json.loads((evaluation / "following.json").read_text())}
    assert {g: r["followed_at"] for g, r in full.items()} == {g: r["followed_at"] for g, r in report.items()}
    assert full["g"]["followed_at"] == [6.0] and full["p"]["followed_at"] == [2.0]
    assert full["g"]["counts"] == {"unconditioned": 1.0, "foundation": None, "s0": 3.0, "s2": 2.5, "s6": 4.25}
    only2 = {r["goal"]: r for r in ft.rows(ft.load_cells(evaluation, [2.0]))}
    assert not only2["g"]["followed"] and only2["p"]["followed"] and "s6" not in only2["g"]["counts"]
    assert ft.main([str(evaluation), "--scales", "2"]) == 0
    out = capsys.readouterr().out
    assert "captions followed: **0 of 1**; phrasings: **1 of 1**" in out
    assert "| p (≈ g) | 1.00 | - | 2.00 | 3.00 | 3.0× | 2 |" in out
    ft.main([str(evaluation), "--json"])
    assert json.loads(capsys.readouterr().out)[str(evaluation)][0]["followed_at"] == [6.0]


def test_a_folder_without_a_summary_or_a_scale_it_did_not_play_is_refused_by_name(tmp_path, evaluation):
    with pytest.raises(SystemExit, match="summary.json not found"):
        ft.load_cells(tmp_path / "nothing")
    with pytest.raises(SystemExit, match=r"played no guided scale 1, 4 \(it played 2, 6\)"):
        ft.load_cells(evaluation, [1.0, 2.0, 4.0])


def test_a_zero_baseline_gives_an_infinite_ratio_as_the_report_writes_it(tmp_path, capsys):
    eps = (_episodes("unconditioned", "unconditioned", None, [0] * 8) + _episodes("g", "text", 0.0, [0] * 8)
           + _episodes("g", "text", 2.0, [1, 2, 1, 1, 2, 1, 1, 1]))
    write_report(eps, tmp_path, seed=0)
    ft.main([str(tmp_path)])
    assert "| g | 0.00 | - | 0.00 | 1.25 | ∞ | 2 |" in capsys.readouterr().out
    ft.main([str(tmp_path), "--json"])
    assert json.loads(capsys.readouterr().out)[str(tmp_path)][0]["ratio"] is None  # valid JSON, not Infinity
