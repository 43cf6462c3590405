"""The record job: Ray tasks, outputs (index, captions, summary), resume, bad config, and the jobs/ wrapper."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from steve1_ray.config import ConfigError
from steve1_ray.data import load_contractor_episode
from steve1_ray.world.record import RecordConfig, main, record_episodes

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_record_job_on_ray_writes_a_contractor_dataset(ray_cluster, tmp_path, capsys):
    out = tmp_path / "world"
    rc = main([f"out={out}", "episodes=2", "max_steps=40", "seed=5", "progress=false"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "recorded 2 episodes" in printed and "achievements seen" in printed

    index = json.loads((out / "index.json").read_text())
    assert index["basedir"] == str(out.resolve()) + "/"
    assert index["relpaths"] == ["contractor/crafter-demo-s5-00000.mp4", "contractor/crafter-demo-s5-00001.mp4"]
    for rel in index["relpaths"]:  # STEVE-1's rule: basedir + relpath, .mp4 -> .jsonl
        stem = index["basedir"] + rel[: -len(".mp4")]
        ep = load_contractor_episode(stem + ".mp4", stem + ".jsonl", with_mineclip=False)
        assert len(ep) == 40

    captions = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
    assert {c["episode"] for c in captions} == {"crafter-demo-s5-00000", "crafter-demo-s5-00001"}
    assert all(c["text"] and 0 <= c["start"] < c["end"] <= 40 for c in captions)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["frames"] == 80 and summary["null_frames"] == 0
    assert summary["failed"] == [] and summary["recorded_now"] == 2
    assert (out / "record_config.yaml").exists()
    from steve1_ray.world.record import episode_focus

    for i in range(2):  # each episode's meta says whether it was a task, and which
        meta = json.loads((out / "meta" / f"crafter-demo-s5-0000{i}.json").read_text())
        assert meta["focus"] == episode_focus(RecordConfig(seed=5), i)

    # resume: finished episodes are skipped, one more is added
    mtime = (out / "contractor" / "crafter-demo-s5-00000.mp4").stat().st_mtime_ns
    summary = record_episodes(RecordConfig(out=str(out), episodes=3, max_steps=40, seed=5, progress=False))
    assert summary["recorded_now"] == 1 and summary["episodes"] == 3
    assert (out / "contractor" / "crafter-demo-s5-00000.mp4").stat().st_mtime_ns == mtime


def test_bad_config_names_the_fix(capsys):
    with pytest.raises(ConfigError, match="layout='zip'"):
        RecordConfig(layout="zip")
    with pytest.raises(ConfigError, match="known goals"):
        RecordConfig(goals=["fly"])
    with pytest.raises(ConfigError, match="no dots"):
        RecordConfig(name_prefix="a.b")
    assert main(["episodez=3"]) == 2  # the job runner: exit 2 with the message
    assert "unknown key(s) ['episodez']" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="focus_fraction"):
        RecordConfig(focus_fraction=1.5)
    with pytest.raises(ConfigError, match="focus_goals"):
        RecordConfig(focus_goals=["fly"])
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="driver_share"):
            RecordConfig(driver_share=bad)
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="driver_scale"):
            RecordConfig(driver_scale=bad)
    with pytest.raises(ConfigError, match="driver_embedder= and driver_prior="):
        RecordConfig(driver="released", driver_embedder="x.pth")
    with pytest.raises(ConfigError, match="driver= is empty"):
        RecordConfig(driver_prior="prior.pt")


def test_a_dagger_round_with_the_released_policy_labels_its_states_with_the_demonstrator(tmp_path):
    """`driver=`: the embedded world's released STEVE-1 policy plays every frame of a task episode toward its goal's
    caption (and free play unconditioned), the demonstrator's actions are recorded, and the episodes load back."""
    from steve1_ray.models.loading import RELEASED_DIR

    rel = RELEASED_DIR / "world"
    out = tmp_path / "dagger"
    cfg = RecordConfig(out=str(out), episodes=2, max_steps=30, seed=11, use_ray=False, progress=False,
                       name_prefix="crafter-dagger", focus_fraction=0.5, focus_order="cycle",
                       focus_goals=["collect_wood"], driver="released", driver_embedder=str(rel / "mineclip.pth"),
                       driver_prior=str(rel / "prior.pt"), driver_share=1.0)
    summary = record_episodes(cfg)
    assert summary["episodes"] == 2 and summary["failed"] == []
    metas = [json.loads(p.read_text()) for p in sorted((out / "meta").glob("*.json"))]
    assert [m["focus"] for m in metas] == [None, "collect_wood"]
    for m in metas:
        # driver_share 1: every frame but those where the driver proposes `sleep` (never played; the session 38
        # release proposed it on 1 of 30 frames)
        assert 0.8 * m["n_frames"] <= m["driven_frames"] <= m["n_frames"] and m["n_frames"] > 0
        stem = str(out / "contractor" / m["name"])
        assert len(load_contractor_episode(stem + ".mp4", stem + ".jsonl", with_mineclip=False)) == m["n_frames"]

    # a driver that cannot load is one clear error before any episode, not one per episode
    for bad, match in ((dict(driver_prior=str(tmp_path / "missing.pt")), "cannot load"),
                       (dict(driver=str(tmp_path), driver_weights=str(rel / "steve1.weights")), "checkpoint folder")):
        with pytest.raises(ConfigError, match=match):
            record_episodes(RecordConfig(**{**cfg.__dict__, "out": str(tmp_path / "bad"), "world": cfg.world, **bad}))
        assert not list((tmp_path / "bad").glob("contractor/*.mp4"))


def test_task_episodes_are_a_seeded_share():
    from steve1_ray.world.record import episode_focus

    cfg = RecordConfig(focus_fraction=0.5, seed=3)
    focus = [episode_focus(cfg, i) for i in range(200)]
    assert focus == [episode_focus(RecordConfig(focus_fraction=0.5, seed=3), i) for i in range(200)]  # re-runs agree
    n = sum(f is not None for f in focus)
    assert 70 <= n <= 130 and {f for f in focus if f} == set(cfg.focus_goals)
    assert all(episode_focus(RecordConfig(focus_fraction=0.0), i) is None for i in range(50))
    only = RecordConfig(focus_fraction=1.0, goals=["collect_wood", "collect_drink", "explore"])
    assert {episode_focus(only, i) for i in range(50)} == {"collect_wood", "collect_drink"}  # within `goals`


def test_cycled_tasks_give_every_goal_its_share():
    """focus_order=cycle: a small recording has every task goal, in turn, evenly spread among free play."""
    from collections import Counter

    from steve1_ray.world.record import episode_focus

    five = ["collect_wood", "collect_sapling", "collect_drink", "eat_cow", "place_table"]
    for fraction, episodes in ((0.5, 24), (0.75, 24), (1.0, 10), (0.3, 40)):
        cfg = RecordConfig(focus_fraction=fraction, focus_goals=five, focus_order="cycle", seed=7)
        focus = [episode_focus(cfg, i) for i in range(episodes)]
        counts = Counter(f for f in focus if f)
        assert sum(counts.values()) == round(episodes * fraction)
        assert set(counts) == set(five) and max(counts.values()) - min(counts.values()) <= 1, (fraction, counts)
        if fraction == 0.5:  # spread, not bunched: every other episode
            assert all(f is None for f in focus[0::2]) and all(focus[1::2])
    random = [episode_focus(RecordConfig(focus_fraction=0.5, focus_goals=five, seed=0), i) for i in range(24)]
    assert "eat_cow" not in random  # why: seed 0's 24 random draws leave one goal out
    with pytest.raises(ConfigError, match="focus_order"):
        RecordConfig(focus_order="shuffled")


@pytest.mark.slow
def test_jobs_wrapper_runs_as_a_script(tmp_path):
    """`python jobs/record.py ...` without Ray (use_ray=false), custom layout."""
    out = tmp_path / "w"
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "record.py"), f"out={out}", "episodes=1", "max_steps=15",
         "layout=custom", "use_ray=false", "progress=false"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "crafter-demo-s0-00000" / "video.mp4").exists()
    assert (out / "crafter-demo-s0-00000" / "actions.jsonl").exists()
    assert not (out / "index.json").exists()
    assert "recorded 1 episodes" in proc.stdout
