"""Contractor conversion: bit parity with the original code (golden fixture), the rules, bad input."""
from __future__ import annotations

import hashlib
import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import FIXTURES, SHARED
from steve1_ray.data import EpisodeError, load_contractor_episode
from steve1_ray.data.contractor import (ENV_BUTTON_KEYS, convert_actions, default_cursor, iter_video_frames,
                                        pack_env_buttons, stat_events, unpack_env_buttons)
from steve1_ray.data.synthetic import synthetic_lines, write_episode

FIX = FIXTURES / "contractor"
VIDEO, JSONL = FIX / "video.mp4", FIX / "actions.jsonl"
VPT_CURSOR = SHARED / "reference" / "assets" / "mouse_cursor_white_16x16.png"
needs_cursor = pytest.mark.skipif(not VPT_CURSOR.exists(), reason=f"VPT cursor png not found at {VPT_CURSOR} "
                                  "(only the shared reference folder has it; the project does not ship it)")


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(FIX / "golden_original.npz"))


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@needs_cursor
def test_bit_exact_with_original_in_vpt_compat_mode(golden):
    ep = load_contractor_episode(VIDEO, JSONL, vpt_compat=True, cursor_image=VPT_CURSOR)
    assert len(ep) == len(golden["frames"]) == 24
    assert ep.frames.dtype == np.uint8 and ep.frames.shape == (24, 128, 128, 3)
    assert np.array_equal(ep.frames, golden["frames"])
    assert ep.frames_mineclip.shape == (24, 160, 256, 3)
    assert [_sha(f) for f in ep.frames_mineclip] == list(golden["frames_mineclip_sha256"])
    assert np.array_equal(ep.env_actions["camera"], golden["camera"])
    for key in ENV_BUTTON_KEYS:
        assert np.array_equal(ep.env_actions[key], golden["act_" + key]), key


@needs_cursor
def test_default_mode_differs_only_by_the_camera_truncation(golden):
    ep = load_contractor_episode(VIDEO, JSONL, cursor_image=VPT_CURSOR)
    assert np.array_equal(ep.frames, golden["frames"])
    cam = ep.env_actions["camera"]
    assert np.array_equal(np.trunc(cam), golden["camera"])
    assert not np.array_equal(cam, golden["camera"])  # fractional degrees are kept
    kept = [json.loads(line) for line in JSONL.read_text().splitlines()]
    kept = [kept[i] for i in ep.meta["kept_lines"]]
    expected = np.array([[k["mouse"]["dy"] * 0.15, k["mouse"]["dx"] * 0.15] for k in kept])
    np.testing.assert_allclose(cam, expected, rtol=0, atol=1e-12)
    for key in ENV_BUTTON_KEYS:
        assert np.array_equal(ep.env_actions[key], golden["act_" + key]), key


def test_default_cursor_is_our_own_and_only_changes_gui_frames(golden):
    sprite = default_cursor()
    assert sprite.shape == (16, 16, 4) and sprite[0, 0, 3] == 255 and sprite[15, 15, 3] == 0
    if VPT_CURSOR.exists():
        theirs = cv2.imread(str(VPT_CURSOR), cv2.IMREAD_UNCHANGED)[:16, :16]
        assert not np.array_equal(sprite[..., 3], theirs[..., 3])
    ep = load_contractor_episode(VIDEO, JSONL)
    lines = [json.loads(line) for line in JSONL.read_text().splitlines()]
    gui = np.array([lines[i]["isGuiOpen"] for i in ep.meta["kept_lines"]])
    assert gui.any()
    same = np.array([np.array_equal(a, b) for a, b in zip(ep.frames, golden["frames"])])
    assert same[~gui].all()  # without a GUI the frames are untouched
    assert not same[gui].all()  # the cursor is drawn (ours is a different sprite)


def test_pyav_decoding_equals_opencv():
    cap = cv2.VideoCapture(str(VIDEO))
    frames_cv = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames_cv.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    frames_av = list(iter_video_frames(VIDEO))
    assert len(frames_av) == len(frames_cv) == 32
    for a, b in zip(frames_av, frames_cv):
        assert np.array_equal(a, b)


def _line(**kw):
    base = synthetic_lines(1, null_every=0, gui_every=0)[0]
    base["keyboard"]["keys"], base["mouse"]["dx"], base["mouse"]["dy"] = [], 0.0, 0.0
    base["mouse"]["buttons"], base["mouse"]["newButtons"], base["hotbar"] = [], [], 0
    for k, v in kw.items():
        if k in ("keys",):
            base["keyboard"]["keys"] = v
        elif k in ("dx", "dy", "buttons", "newButtons"):
            base["mouse"][k] = v
        else:
            base[k] = v
    return base


def test_action_rules_attack_stuck_hotbar_and_nulls():
    steps = [_line(buttons=[0], newButtons=[0]),  # stuck attack alone -> null
             _line(buttons=[0], keys=["key.keyboard.w"]),  # forward kept, attack removed
             _line(buttons=[0], newButtons=[0]),  # a new press ends the stuck state
             _line(hotbar=4),  # scroll only -> null (hotbar.5 set but dropped)
             _line(hotbar=2, dx=10.0),  # scroll + camera -> hotbar.3
             _line(keys=["key.keyboard.t"]),  # unmapped key -> null
             _line(keys=["key.keyboard.escape"]),  # ESC counts as an action
             _line(buttons=[2])]  # pickItem counts as an action
    conv = convert_actions(steps)
    assert conv.keep.tolist() == [False, True, True, False, True, False, True, True]
    a = conv.env_actions
    assert a["attack"].tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    assert a["forward"][1] == 1 and a["hotbar.5"][3] == 1 and a["hotbar.3"][4] == 1
    assert a["camera"][4].tolist() == [0.0, 1.5]
    assert a["ESC"][6] == 1 and a["pickItem"][7] == 1
    assert convert_actions(steps, vpt_compat=True).env_actions["camera"][4].tolist() == [0.0, 1.0]


def test_env_button_bitmask_round_trip():
    acts = {k: np.random.default_rng(i).integers(0, 2, 9).astype(np.int8) for i, k in enumerate(ENV_BUTTON_KEYS)}
    acts["camera"] = np.zeros((9, 2))
    back = unpack_env_buttons(pack_env_buttons(acts))
    for k in ENV_BUTTON_KEYS:
        assert np.array_equal(back[k], acts[k])


# ---- bad input: every class raises EpisodeError with a message that says what is wrong -----------


@pytest.fixture()
def episode(tmp_path):
    return write_episode(tmp_path / "ep", 40, seed=3)


def test_truncated_mp4(episode):
    data = (episode / "video.mp4").read_bytes()
    (episode / "video.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(EpisodeError, match="corrupt|truncated|video frames"):
        load_contractor_episode(episode / "video.mp4", episode / "actions.jsonl")


def test_garbage_mp4(episode):
    (episode / "video.mp4").write_bytes(b"\x00not a video at all" * 100)
    with pytest.raises(EpisodeError, match="cannot open video"):
        load_contractor_episode(episode / "video.mp4", episode / "actions.jsonl")


def test_missing_files(episode):
    (episode / "video.mp4").unlink()
    with pytest.raises(EpisodeError, match="cannot open video"):
        load_contractor_episode(episode / "video.mp4", episode / "actions.jsonl")
    with pytest.raises(EpisodeError, match="cannot read actions"):
        load_contractor_episode(episode / "video.mp4", episode / "nope.jsonl")


def test_malformed_jsonl(episode):
    lines = (episode / "actions.jsonl").read_text().splitlines()
    lines[7] = lines[7][:30]
    (episode / "actions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(EpisodeError, match="line 8 is not valid JSON"):
        load_contractor_episode(episode / "video.mp4", episode / "actions.jsonl")


def test_jsonl_missing_field(episode):
    lines = [json.loads(x) for x in (episode / "actions.jsonl").read_text().splitlines()]
    del lines[3]["mouse"]["dx"]
    (episode / "actions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(EpisodeError, match="line 4 has no field 'mouse.dx'"):
        load_contractor_episode(episode / "video.mp4", episode / "actions.jsonl")


def test_empty_jsonl(episode):
    (episode / "actions.jsonl").write_text("\n")
    with pytest.raises(EpisodeError, match="no action lines"):
        load_contractor_episode(episode / "video.mp4", episode / "actions.jsonl")


def test_short_jsonl_is_a_count_mismatch(episode):
    lines = (episode / "actions.jsonl").read_text().splitlines()
    (episode / "actions.jsonl").write_text("\n".join(lines[:30]) + "\n")
    with pytest.raises(EpisodeError, match="40 video frames but 30 action lines"):
        load_contractor_episode(episode / "video.mp4", episode / "actions.jsonl")
    ep = load_contractor_episode(episode / "video.mp4", episode / "actions.jsonl", max_frame_mismatch=10)
    assert ep.meta["kept_lines"].max() < 30


def test_fewer_frames_than_lines(tmp_path):
    ep_dir = write_episode(tmp_path / "ep", 40, seed=1, n_video_frames=35)
    with pytest.raises(EpisodeError, match="35 video frames but 40 action lines"):
        load_contractor_episode(ep_dir / "video.mp4", ep_dir / "actions.jsonl")


def test_wrong_resolution(tmp_path):
    ep_dir = write_episode(tmp_path / "ep", 20, width=320, height=180)
    with pytest.raises(EpisodeError, match="is 320x180, expected 640x360"):
        load_contractor_episode(ep_dir / "video.mp4", ep_dir / "actions.jsonl", expected_resolution=(640, 360))
    ep = load_contractor_episode(ep_dir / "video.mp4", ep_dir / "actions.jsonl")  # any size when not asked
    assert ep.frames.shape[1:] == (128, 128, 3)


def test_fixture_copy_round_trip(tmp_path):
    """The public API also takes str paths and returns dict-style access."""
    shutil.copy(VIDEO, tmp_path / "v.mp4")
    shutil.copy(JSONL, tmp_path / "a.jsonl")
    ep = load_contractor_episode(str(tmp_path / "v.mp4"), str(tmp_path / "a.jsonl"))
    assert ep["frames"].shape == (24, 128, 128, 3) and ep["env_actions"]["camera"].shape == (24, 2)
    assert set(ep.env_actions) == set(ENV_BUTTON_KEYS) | {"camera"}


def test_stat_events_are_counter_rises_except_time_and_distance():
    steps = [_line(keys=["key.keyboard.w"]) for _ in range(7)]
    stats = [{}, {"crafter:collect_wood": 1}, {"crafter:collect_wood": 1},  # a rise, then none
             {"crafter:collect_wood": 1, "minecraft.custom:minecraft.play_time": 60},  # time is not an event
             {"crafter:collect_wood": 2, "minecraft.custom:minecraft.play_time": 80},
             "garbage", {"crafter:collect_wood": 2, "mine_block.stone": "x"}]  # malformed: no event, no crash
    for step, s in zip(steps, stats):
        step["stats"] = s
    steps.append(_line(keys=["key.keyboard.w"]))  # no stats field at all
    assert stat_events(steps).tolist() == [False, True, False, False, True, False, False, False]
    assert convert_actions(steps).events.tolist() == stat_events(steps).tolist()


def test_event_frames_follow_kept_frames():
    from steve1_ray.data.pipeline import event_frames

    steps = [_line(keys=["key.keyboard.w"]), _line(), _line(keys=["key.keyboard.w"]), _line(),
             _line(keys=["key.keyboard.w"])]  # lines 1 and 3 are null actions, dropped
    for i, step in enumerate(steps):
        step["stats"] = {"crafter:eat_cow": int(i >= 1) + int(i >= 3) + int(i >= 4)}
    conv = convert_actions(steps)
    assert conv.keep.tolist() == [True, False, True, False, True] and conv.events.tolist() == [
        False, True, False, True, True]
    # line 1 (dropped) -> the next kept frame (1); lines 3 and 4 both land on frame 2
    assert event_frames(conv, n_frames=3) == [1, 2]
    assert event_frames(conv, n_frames=2) == [1]


def test_event_links_tie_what_an_event_gained_to_the_event_that_used_it():
    from steve1_ray.data.contractor import inventory_changes
    from steve1_ray.data.pipeline import event_links

    def inv(**items):
        return [{"type": k, "quantity": v} for k, v in items.items()]

    steps = [_line(keys=["key.keyboard.w"]) for _ in range(8)]
    rows = [  # (stats, inventory): two logs, a drink (thirst also drops drink: a vital, no use), a table, a sapling
        ({}, inv(drink=5)),
        ({"crafter:collect_wood": 1}, inv(drink=5, wood=1)),
        ({"crafter:collect_wood": 2}, inv(drink=4, wood=2)),
        ({"crafter:collect_wood": 2}, inv(drink=4, wood=2)),
        ({"crafter:collect_wood": 2, "crafter:collect_drink": 1}, inv(drink=5, wood=2)),
        ({"crafter:collect_wood": 2, "crafter:collect_drink": 1, "crafter:place_table": 1}, inv(drink=5)),
        ({"crafter:collect_wood": 2, "crafter:collect_drink": 1, "crafter:place_table": 1,
          "crafter:collect_sapling": 1}, inv(drink=4, sapling=1)),
        ({"crafter:collect_wood": 2, "crafter:collect_drink": 1, "crafter:place_table": 1,
          "crafter:collect_sapling": 1}, "garbage"),  # a malformed inventory changes nothing
    ]
    for step, (stats, items) in zip(steps, rows):
        step["stats"], step["inventory"] = stats, items
    changes = inventory_changes(steps)
    assert changes[1] == ({"wood"}, set()) and changes[2] == ({"wood"}, set()) and changes[4] == (set(), set())
    assert changes[5] == (set(), {"wood"}) and changes[6] == ({"sapling"}, set()) and changes[7] == (set(), set())
    conv = convert_actions(steps)
    assert conv.events.tolist() == [False, True, True, False, True, True, True, False]
    # events at frames 1, 2, 4, 5, 6: both logs link to the table (index 3); drink, table, sapling link nothing
    assert event_links(conv, n_frames=8) == [3, 3, -1, -1, -1]
    assert event_links(conv, n_frames=5) == [-1, -1, -1]  # the table is past the episode's frames
    for step in steps:
        del step["inventory"]  # recordings without inventories: no links
    assert event_links(convert_actions(steps), n_frames=8) == [-1] * 5
