"""benchmarks/compare_release.py: does a re-run of `steve1 release-world` reproduce the committed manifest?"""
import copy
import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "compare_release", Path(__file__).resolve().parents[1] / "benchmarks" / "compare_release.py")
cr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cr)


def test_the_committed_manifest_matches_itself_and_a_changed_metric_is_named(tmp_path, capsys):
    committed = json.loads(cr.COMMITTED.read_text())
    same = cr.compare(committed, committed)
    assert all(same["files"].values()) and same["metrics"] > 100 and same["differ"] == same["missing"] == []

    rerun = copy.deepcopy(committed)
    rerun["metrics"]["embedder"]["history"][0]["seconds"] = 1.0  # timings and work folders are not compared
    rerun["metrics"]["prior"]["out"] = "/elsewhere/prior.pt"
    rerun["metrics"]["embedder"]["history"][0]["train/loss"] += 1e-6  # the AVX-512 kind of difference
    rerun["files"]["mineclip.pth"]["sha256"] = "0" * 64
    r = cr.compare(rerun, committed)
    assert [d[0] for d in r["differ"]] == ["embedder.history[0].train/loss"]
    assert r["files"]["mineclip.pth"] is False and r["files"]["prior.pt"] is True
    assert cr.compare(rerun, committed, rtol=1e-3)["differ"] == []

    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(rerun))
    assert cr.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "mineclip.pth         DIFFERENT" in out and "embedder.history[0].train/loss:" in out
    assert cr.main([str(path), "--rtol", "1e-3"]) == 0


def test_a_metric_in_one_manifest_only_is_not_a_pass(tmp_path, capsys):
    committed = json.loads(cr.COMMITTED.read_text())
    rerun = copy.deepcopy(committed)
    rerun["files"]["prior.pt"]["sha256"] = "0" * 64  # a file differs, so the metrics must carry the verdict
    rerun["metrics"]["prior"]["history"].pop()  # a shorter history: one epoch fewer
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(rerun))
    assert cr.main([str(path), "--rtol", "1"]) == 1
    assert "in one manifest only" in capsys.readouterr().out
    assert cr.close(float("nan"), float("nan"), 0.0) and not cr.close(float("nan"), 1.0, 0.0)
