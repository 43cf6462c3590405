"""Recordings in the contractor format: they parse back through the ingestion to the actions played,
replaying the actions from the same seed reproduces the frames, and the files look like contractor data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from steve1_ray.data import load_contractor_episode
from steve1_ray.data.contractor import iter_video_frames
from steve1_ray.world.crafter_env import CrafterEnv
from steve1_ray.world.demonstrators import GOALS
from steve1_ray.world.env import BUTTON_KEYS
from steve1_ray.world.recorder import ContractorLines, Recorder, episode_paths, record_episode

# Fields of a contractor jsonl line (vpt-mineclip-facts.md C.2).
LINE_FIELDS = {"mouse", "keyboard", "isGuiOpen", "isGuiInventory", "hotbar", "yaw", "pitch", "xpos", "ypos",
               "zpos", "tick", "milli", "inventory", "serverTick", "serverTickDurationMs", "stats"}
MOUSE_FIELDS = {"x", "y", "dx", "dy", "scaledX", "scaledY", "dwheel", "buttons", "newButtons"}
KEYBOARD_FIELDS = {"keys", "newKeys", "chars"}

STEPS = 120


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    rec = record_episode(root, "crafter-demo-s9-00000", seed=9, max_steps=STEPS, keep_frames=True)
    return root, rec


def _assert_same_actions(env_actions, played):
    n = len(played)
    for key in BUTTON_KEYS:
        assert env_actions[key].tolist() == [a[key] for a in played], key
    np.testing.assert_array_equal(env_actions["camera"], np.stack([a["camera"] for a in played]).astype(np.float64))
    assert len(env_actions["camera"]) == n


@pytest.mark.parametrize("vpt_compat", [False, True])
def test_recording_parses_back_to_the_played_actions(recorded, vpt_compat):
    root, rec = recorded
    ep = load_contractor_episode(root / rec.video, root / rec.actions, vpt_compat=vpt_compat,
                                 expected_resolution=(640, 360))
    assert rec.n_frames == len(rec.played_actions) == STEPS and rec.n_null == 0
    assert len(ep) == rec.n_frames  # no frame dropped as a null action, none lost to attack-stuck
    _assert_same_actions(ep.env_actions, rec.played_actions)
    assert ep.frames.shape == (STEPS, 128, 128, 3)


def test_replaying_recorded_actions_reproduces_the_frames(recorded):
    root, rec = recorded
    ep = load_contractor_episode(root / rec.video, root / rec.actions, with_mineclip=False)
    env = CrafterEnv(max_steps=STEPS)
    obs = env.reset(rec.seed)
    replayed = [obs["pov"]]
    for t in range(len(ep) - 1):
        action = {k: int(v[t]) for k, v in ep.env_actions.items() if k != "camera"}
        action["camera"] = ep.env_actions["camera"][t]
        obs, _, _, info = env.step(action)
        replayed.append(obs["pov"])
    # bit-exact against the frames that were recorded ...
    assert all(np.array_equal(a, b) for a, b in zip(replayed, rec.played_frames))
    # ... and close to what the lossy H.264 video holds
    decoded = list(iter_video_frames(root / rec.video))
    assert len(decoded) == STEPS
    psnr = [10 * np.log10(255.0**2 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-9))
            for a, b in zip(replayed, decoded)]
    assert min(psnr) > 28.0, min(psnr)
    assert info["achievements"] == {**info["achievements"], **rec.achievements}


def test_jsonl_lines_have_the_contractor_fields(recorded):
    root, rec = recorded
    lines = [json.loads(x) for x in (root / rec.actions).read_text().splitlines()]
    assert len(lines) == STEPS
    for i, line in enumerate(lines):
        assert set(line) == LINE_FIELDS
        assert set(line["mouse"]) == MOUSE_FIELDS and set(line["keyboard"]) == KEYBOARD_FIELDS
        assert line["tick"] == i and 0 <= line["hotbar"] <= 8 and line["isGuiOpen"] is False
        assert all(k.startswith("key.keyboard.") for k in line["keyboard"]["keys"])
        assert set(line["keyboard"]["newKeys"]) <= set(line["keyboard"]["keys"])
        assert set(line["mouse"]["newButtons"]) <= set(line["mouse"]["buttons"]) <= {0, 1, 2}
        assert float(line["mouse"]["dx"]).is_integer() and float(line["mouse"]["dy"]).is_integer()
    assert lines[0]["mouse"]["newButtons"] != [0]  # never starts with attack held (attack-stuck rule)
    assert lines[1]["milli"] - lines[0]["milli"] == 50  # 20 Hz


def test_segments_cover_the_episode_with_captions(recorded):
    _, rec = recorded
    segs = rec.segments
    assert segs[0]["start"] == 0 and segs[-1]["end"] == rec.n_frames
    assert all(a["end"] == b["start"] for a, b in zip(segs, segs[1:]))
    for s in segs:
        assert s["end"] > s["start"] and s["text"] in GOALS[s["goal"]].captions
        assert s["achievement"] == GOALS[s["goal"]].achievement


def test_new_keys_and_buttons_track_presses():
    lines = ContractorLines()
    a = lines.line({"forward": 1, "attack": 1, "camera": [3.0, -6.0]})
    b = lines.line({"forward": 1, "attack": 1, "use": 1, "hotbar.3": 1})
    c = lines.line({"jump": 1})
    assert a["keyboard"]["newKeys"] == ["key.keyboard.w"] and a["mouse"]["newButtons"] == [0]
    assert (a["mouse"]["dx"], a["mouse"]["dy"]) == (-40.0, 20.0)
    assert b["keyboard"]["newKeys"] == ["key.keyboard.3"] and b["mouse"]["newButtons"] == [1]
    assert b["hotbar"] == 2 and c["hotbar"] == 2  # the selection persists
    assert b["yaw"] == -6.0 and b["pitch"] == 3.0
    assert c["keyboard"]["keys"] == ["key.keyboard.space"] and c["mouse"]["buttons"] == []


def test_custom_layout_and_crash_leaves_no_half_episode(tmp_path):
    rec = record_episode(tmp_path, "episode_00000", seed=1, max_steps=10, layout="custom")
    assert (tmp_path / "episode_00000" / "video.mp4").exists()
    assert (tmp_path / "episode_00000" / "actions.jsonl").exists()
    assert rec.video == "episode_00000/video.mp4"
    ep = load_contractor_episode(tmp_path / rec.video, tmp_path / rec.actions, with_mineclip=False)
    assert len(ep) == 10

    video, jsonl = episode_paths(tmp_path, "broken")
    with pytest.raises(ValueError, match="frame has shape"):
        with Recorder(video, jsonl) as r:
            r.add(np.zeros((360, 640, 3), np.uint8), {"forward": 1})
            r.add(np.zeros((10, 10, 3), np.uint8), {"forward": 1})
    assert not video.exists() and not jsonl.exists()
    assert not list(tmp_path.glob("broken*"))
    with pytest.raises(ValueError, match="layout"):
        episode_paths(tmp_path, "x", layout="zip")


def test_a_driver_plays_its_share_of_frames_and_the_demonstrator_labels_every_frame(tmp_path):
    """DAgger round: the driver's actions are played, the demonstrator's recorded. A driver that never does anything
    (noop) and plays every frame keeps the player where it starts, while the recorded actions (the jsonl) are the
    demonstrator's own: it walks. With driver_share=0 the recording is the plain one, byte for byte, although the
    driver still sees every frame (its memory must)."""
    calls = []

    def idle(pov):
        calls.append(pov.shape)
        return {}

    name = "contractor/crafter-demo-s4-00000.jsonl"
    plain = record_episode(tmp_path / "plain", "crafter-demo-s4-00000", seed=4, max_steps=60, keep_frames=True)
    shadow = record_episode(tmp_path / "shadow", "crafter-demo-s4-00000", seed=4, max_steps=60, driver=idle,
                            driver_share=0.0)
    assert len(calls) == shadow.n_frames and shadow.driven_frames == 0
    assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "shadow" / name).read_bytes()
    assert plain.segments == shadow.segments

    driven = record_episode(tmp_path / "driven", "crafter-demo-s4-00000", seed=4, max_steps=60, keep_frames=True,
                            driver=idle, driver_share=1.0)
    assert driven.driven_frames == driven.n_frames
    lines = [json.loads(x) for x in (tmp_path / "driven" / name).read_text().splitlines()]
    walks = {"key.keyboard.w", "key.keyboard.a", "key.keyboard.s", "key.keyboard.d"}
    assert sum(bool(walks & set(x["keyboard"]["keys"])) for x in lines) >= 10, \
        "the recorded actions are the demonstrator's (it walks), not the driver's (it does nothing)"
    # the player never moved: every frame's position is the first one's
    assert {(x["xpos"], x["zpos"]) for x in lines} == {(lines[0]["xpos"], lines[0]["zpos"])}
    assert len({(x["xpos"], x["zpos"]) for x in
                (json.loads(y) for y in (tmp_path / "plain" / name).read_text().splitlines())}) > 1


def test_a_driver_never_puts_the_player_to_sleep(tmp_path):
    """crafter ignores every action of a sleeping player until it wakes: the driver's `sleep` (sneak) is not played,
    so the recording stays the demonstrator's own."""
    rec = record_episode(tmp_path / "a", "crafter-demo-s4-00000", seed=4, max_steps=60, driver=lambda pov: {"sneak": 1},
                         driver_share=1.0)
    record_episode(tmp_path / "b", "crafter-demo-s4-00000", seed=4, max_steps=60)
    name = "contractor/crafter-demo-s4-00000.jsonl"
    assert rec.driven_frames == 0
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_a_driver_share_in_between_plays_about_that_share():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        rec = record_episode(d, "crafter-demo-s2-00000", seed=2, max_steps=200, driver=lambda pov: {},
                             driver_share=0.5)
    assert 0.35 * rec.n_frames < rec.driven_frames < 0.65 * rec.n_frames
