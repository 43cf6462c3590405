"""The conversion on real embedded-world recordings (steve1_ray.world recorder, contractor format)."""
from __future__ import annotations

import json

import numpy as np
import pytest

recorder = pytest.importorskip("steve1_ray.world.recorder")

from steve1_ray.actions import env_to_policy  # noqa: E402
from steve1_ray.data import load_contractor_episode  # noqa: E402
from steve1_ray.data.contractor import read_actions, resize_policy  # noqa: E402
from steve1_ray.data.sources import resolve_sources  # noqa: E402


def test_recorded_world_episode_round_trips(tmp_path):
    rec = recorder.record_episode(tmp_path, "w0", seed=3, max_steps=60, keep_frames=True)
    tasks = resolve_sources([f"local:{tmp_path / 'contractor'}"])
    assert [t.episode_id for t in tasks] == ["w0"]
    ep = load_contractor_episode(tasks[0].video, tasks[0].actions, expected_resolution=(640, 360))
    played = rec.played_actions
    kept = ep.meta["kept_lines"]
    assert len(ep) == rec.n_frames - rec.n_null == len(kept) and len(ep) > 0
    # the policy indices of the kept steps equal those of the actions the demonstrator played
    # (the recorder writes cameras the contractor scale maps back; hotbar via key presses)
    want = {k: np.array([np.asarray(played[i][k]) for i in kept]) for k in played[0]}
    b_got, c_got = env_to_policy(ep.env_actions)
    b_want, c_want = env_to_policy(want)
    assert np.array_equal(c_got, c_want)
    assert np.array_equal(b_got, b_want), (b_got != b_want).sum()
    # frames: H.264 is lossy, so compare to the played frames with a tolerance
    ref = np.stack([resize_policy(rec.played_frames[i]) for i in kept])
    assert np.abs(ep.frames.astype(int) - ref).mean() < 4
    # events (goal_event_horizon): one per step that unlocked achievements, on the step that did it
    events = read_actions(tasks[0].actions).events
    unlocked = sum(rec.achievements.values())
    assert unlocked > 0 and 0 < events.sum() <= unlocked
    stats = [json.loads(line).get("stats", {}) for line in open(tasks[0].actions)]
    assert all(sum(stats[i].values()) > sum(stats[i - 1].values()) for i in np.flatnonzero(events) if i > 0)



def test_recorded_event_links_tie_the_logs_to_the_table_made_of_them(tmp_path):
    from steve1_ray.data.pipeline import event_frames, event_links

    rec = recorder.record_episode(tmp_path, "t", seed=3, max_steps=150, demo_kwargs={"focus": "place_table"},
                                  env_kwargs={"tree_logs": 4})
    assert rec.achievements.get("place_table", 0) >= 1 and rec.achievements.get("collect_wood", 0) >= 2
    lines = [json.loads(line) for line in open(tmp_path / "contractor" / "t.jsonl")]
    conv = read_actions(tmp_path / "contractor" / "t.jsonl")
    n = rec.n_frames - rec.n_null
    frames, links = event_frames(conv, n), event_links(conv, n)
    assert len(links) == len(frames) and all(j == -1 or k < j < len(frames) for k, j in enumerate(links))

    def rose(frame, key):  # the counter `key` rose on this event's line (no null actions: frame = line)
        return lines[frame]["stats"].get(key, 0) > lines[frame - 1].get("stats", {}).get(key, 0)

    tables = [k for k, f in enumerate(frames) if rose(f, "crafter:place_table")]
    linked = [k for k, j in enumerate(links) if j in tables]
    # every event linked to a table collected wood, and the first table has the logs it used linked to it
    assert linked and all(rose(frames[k], "crafter:collect_wood") for k in linked)
    assert any(links[k] == tables[0] for k in range(tables[0]))
