"""Contractor recordings (mp4 + jsonl) -> policy frames, MineCLIP frames and MineRL env actions.

This is the one-episode conversion, equal to VPT's `data_loader_worker` / STEVE-1's `load_episode`
(see docs/data.md for the list of steps and the one intended difference):

    ep = load_contractor_episode("ep/video.mp4", "ep/actions.jsonl")
    ep.frames           # (N, 128, 128, 3) uint8 RGB, policy input
    ep.frames_mineclip  # (N, 160, 256, 3) uint8 RGB, MineCLIP input
    ep.env_actions      # {"attack": (N,) int8, ..., "camera": (N, 2) float64 degrees [pitch, yaw]}

N counts the frames kept after null actions are dropped. Bad input raises `EpisodeError` whose
message names the problem and, where there is one, the fix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from steve1_ray.actions import DEGREES_PER_MOUSE_COUNT

# jsonl key name -> MineRL env action key (VPT's KEYBOARD_BUTTON_MAPPING; the facts in C.3).
KEYBOARD_BUTTON_MAPPING = {
    "key.keyboard.escape": "ESC",
    "key.keyboard.s": "back",
    "key.keyboard.q": "drop",
    "key.keyboard.w": "forward",
    **{f"key.keyboard.{i}": f"hotbar.{i}" for i in range(1, 10)},
    "key.keyboard.e": "inventory",
    "key.keyboard.space": "jump",
    "key.keyboard.a": "left",
    "key.keyboard.d": "right",
    "key.keyboard.left.shift": "sneak",
    "key.keyboard.left.control": "sprint",
    "key.keyboard.f": "swapHands",
}
MOUSE_BUTTON_MAPPING = {0: "attack", 1: "use", 2: "pickItem"}

# The 23 MineRL button keys, in the order of MineRL's TARGET_ACTION_SPACE (alphabetical). This order
# also defines the bits of the `env_buttons` shard column.
ENV_BUTTON_KEYS = (
    "ESC", "attack", "back", "drop", "forward",
    *(f"hotbar.{i}" for i in range(1, 10)),
    "inventory", "jump", "left", "pickItem", "right", "sneak", "sprint", "swapHands", "use",
)
assert len(ENV_BUTTON_KEYS) == 23

CAMERA_SCALER = DEGREES_PER_MOUSE_COUNT  # recorded mouse counts -> degrees
ORIGINAL_HEIGHT_PX = 720  # contractor videos were recorded at 720p; cursor coords are in that space
VIDEO_RESOLUTION = (640, 360)  # (W, H) of the released videos
POLICY_RESOLUTION = (128, 128)  # (W, H)
MINECLIP_RESOLUTION = (256, 160)  # (W, H)


class EpisodeError(ValueError):
    """An episode cannot be converted; the message says why (and it is quarantined by the pipeline)."""


# --------------------------------------------------------------------------------------------------
# Cursor sprite


_CURSOR_ART = (  # X = black outline, w = white fill, . = transparent; hotspot at the top-left
    "X...............",
    "XX..............",
    "XwX.............",
    "XwwX............",
    "XwwwX...........",
    "XwwwwX..........",
    "XwwwwwX.........",
    "XwwwwwwX........",
    "XwwwwwwwX.......",
    "XwwwwwwwwX......",
    "XwwwwwXXXXX.....",
    "XwwXwwX.........",
    "XwX.XwwX........",
    "XX..XwwX........",
    "X....XwwX.......",
    ".....XXXX.......",
)


def default_cursor() -> np.ndarray:
    """Our own 16x16 RGBA arrow pointer (white fill, black outline), drawn in code.

    The original overlays VPT's `mouse_cursor_white_16x16.png`; pass that file as `cursor_image` for
    bit-exact parity. This sprite has the same size, the same hotspot (top-left) and a similar look.
    """
    sprite = np.zeros((16, 16, 4), np.uint8)
    for r, row in enumerate(_CURSOR_ART):
        for c, ch in enumerate(row):
            if ch != ".":
                sprite[r, c] = (255, 255, 255, 255) if ch == "w" else (0, 0, 0, 255)
    return sprite


def load_cursor(cursor_image: str | Path | np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Cursor as (rgb (16,16,3) uint8, alpha (16,16,1) float64 in [0, 1]), like the original's.

    `cursor_image` is None (our own sprite), a path to a BGRA PNG (read like the original:
    `cv2.imread(IMREAD_UNCHANGED)`, top-left 16x16) or an RGBA uint8 array.
    """
    if cursor_image is None:
        rgba = default_cursor()
    elif isinstance(cursor_image, np.ndarray):
        rgba = cursor_image
    else:
        bgra = cv2.imread(str(cursor_image), cv2.IMREAD_UNCHANGED)
        if bgra is None:
            raise FileNotFoundError(f"cursor image {cursor_image} cannot be read: pass an existing PNG "
                                    "with an alpha channel, or cursor_image=None for the built-in sprite")
        if bgra.ndim != 3 or bgra.shape[2] != 4:
            raise ValueError(f"cursor image {cursor_image} has shape {bgra.shape}; it needs 4 channels (BGRA)")
        rgba = bgra[..., [2, 1, 0, 3]]
    rgba = rgba[:16, :16]
    return np.ascontiguousarray(rgba[..., :3]), rgba[..., 3:] / 255.0


def overlay_cursor(frame: np.ndarray, cursor_rgb: np.ndarray, cursor_alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend the cursor into `frame` (H, W, 3) uint8 in place, top-left at (x, y).

    Same arithmetic as the original (float64 blend, truncation to uint8, clipped at the right/bottom
    border). A cursor partly left of / above the frame is clipped too (the original would fail there).
    """
    h, w = frame.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    sx, sy = x0 - x, y0 - y  # sprite offset when clipped on the left/top
    ch = max(0, min(h - y0, cursor_rgb.shape[0] - sy))
    cw = max(0, min(w - x0, cursor_rgb.shape[1] - sx))
    if ch == 0 or cw == 0:
        return
    alpha = cursor_alpha[sy:sy + ch, sx:sx + cw]
    region = frame[y0:y0 + ch, x0:x0 + cw, :]
    frame[y0:y0 + ch, x0:x0 + cw, :] = (
        region * (1 - alpha) + cursor_rgb[sy:sy + ch, sx:sx + cw, :] * alpha).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Actions


def parse_jsonl(text: str, where: str = "actions.jsonl") -> list[dict]:
    """One JSON object per line (blank lines are ignored); a malformed line raises EpisodeError."""
    lines = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise EpisodeError(f"{where}: line {i + 1} is not valid JSON ({e.msg}); "
                               "the file is corrupt or truncated") from None
        if not isinstance(obj, dict):
            raise EpisodeError(f"{where}: line {i + 1} is {type(obj).__name__}, expected a JSON object")
        lines.append(obj)
    return lines


def _field(step: dict, path: tuple[str, ...], where: str, line: int):
    obj = step
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            raise EpisodeError(f"{where}: line {line + 1} has no field {'.'.join(path)!r}; "
                               "is this a contractor jsonl (mouse/keyboard/hotbar/isGuiOpen per line)?")
        obj = obj[key]
    return obj


@dataclass
class ConvertedActions:
    """Result of `convert_actions`: which lines are kept and their env actions."""

    keep: np.ndarray  # (L,) bool, one per jsonl line: False for null actions
    env_actions: dict[str, np.ndarray]  # each (L,) int8; camera (L, 2) float64 degrees
    gui_open: np.ndarray  # (L,) bool
    cursor_xy: np.ndarray  # (L, 2) float64, mouse x/y in 720p coordinates
    events: np.ndarray | None = None  # (L,) bool: a `stats` counter rose after this line (see stat_events)
    items: list[tuple[frozenset, frozenset]] | None = None  # per line: items gained / used (inventory_changes)


# Minecraft's "custom" statistics count time and distance (play_time, walk_one_cm, ...): they rise on
# almost every tick, so they are not events. Everything else (crafter's achievements, Minecraft's
# mine_block / craft_item / pickup / kill_entity / use_item counters) is.
IGNORED_STAT_PREFIXES = ("minecraft.custom", "custom")


# Body stats that crafter lists in the inventory: they fall on their own (thirst, hunger, fatigue), so a drop is
# no use of an item (nor a rise a gain made by an action); `inventory_changes` leaves them out.
VITALS = frozenset({"health", "food", "drink", "energy"})


def inventory_changes(steps: list[dict], ignore: frozenset = VITALS) -> list[tuple[frozenset, frozenset]]:
    """Per line: (items whose count rose, items whose count fell) against line i-1, from each line's `inventory`
    list of {type, quantity} (our recorder writes it; a line without one, or with a malformed one, changes
    nothing). What an event gained and what a later event used tie a log to the table it went into
    (`event_links`)."""
    out: list[tuple[frozenset, frozenset]] = []
    prev: dict[str, float] = {}
    empty = (frozenset(), frozenset())
    for step in steps:
        inv = step.get("inventory")
        if not isinstance(inv, list):
            out.append(empty)
            continue
        now: dict[str, float] = {}
        for item in inv:
            if isinstance(item, dict) and isinstance(item.get("type"), str) and item["type"] not in ignore \
                    and isinstance(item.get("quantity"), (int, float)):
                now[item["type"]] = now.get(item["type"], 0) + item["quantity"]
        out.append((frozenset(k for k, v in now.items() if v > prev.get(k, 0)),
                    frozenset(k for k, v in prev.items() if now.get(k, 0) < v)))
        prev = now
    return out


def frame_of_line(keep: np.ndarray) -> np.ndarray:
    """(L,) int: for each jsonl line, the index of its frame among the kept ones (for a dropped null-action
    line, the next kept frame's)."""
    keep = np.asarray(keep, bool)
    return np.cumsum(keep) - keep


def kept_index(jsonl_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(frame of each jsonl line `frame_of_line`, keep mask) of a contractor jsonl file (null-action lines are
    dropped by the conversion); raises EpisodeError if it cannot be read."""
    keep = read_actions(jsonl_path).keep
    return frame_of_line(keep), keep


def stat_events(steps: list[dict], ignore: tuple[str, ...] = IGNORED_STAT_PREFIXES) -> np.ndarray:
    """(L,) bool: line i's `stats` has a counter above line i-1's (a tree chopped, a cow eaten, an item crafted):
    the first line whose recorded state shows it (our recorder writes each line's state as its frame shows it,
    before the line's action, so line i-1's action did it). Lines without `stats`, or with a malformed one, have
    no event."""
    events = np.zeros(len(steps), bool)
    prev: dict = {}
    for i, step in enumerate(steps):
        stats = step.get("stats")
        if not isinstance(stats, dict):
            continue
        for key, value in stats.items():
            if not isinstance(value, (int, float)) or str(key).startswith(ignore):
                continue
            if value > prev.get(key, 0):
                events[i] = True
        prev = stats
    return events


def convert_actions(steps: list[dict], vpt_compat: bool = False, where: str = "actions.jsonl") -> ConvertedActions:
    """All jsonl lines -> env actions, with the attack-stuck workaround and hotbar tracking (facts C.3/C.4).

    `vpt_compat=True` truncates the camera toward zero like the original (its camera array is int64,
    openai/Video-Pre-Training#54); the default keeps the fractional degrees.
    """
    n = len(steps)
    acts = {k: np.zeros(n, np.int8) for k in ENV_BUTTON_KEYS}
    camera = np.zeros((n, 2), np.float64)
    keep = np.zeros(n, bool)
    gui_open = np.zeros(n, bool)
    cursor_xy = np.zeros((n, 2), np.float64)
    attack_is_stuck = False
    last_hotbar = 0
    for i, step in enumerate(steps):
        new_buttons = _field(step, ("mouse", "newButtons"), where, i)
        buttons = _field(step, ("mouse", "buttons"), where, i)
        if i == 0:
            if new_buttons == [0]:
                attack_is_stuck = True
        elif attack_is_stuck and 0 in new_buttons:
            attack_is_stuck = False
        if attack_is_stuck:
            buttons = [b for b in buttons if b != 0]

        is_null = True
        for key in _field(step, ("keyboard", "keys"), where, i):
            if key in KEYBOARD_BUTTON_MAPPING:
                acts[KEYBOARD_BUTTON_MAPPING[key]][i] = 1
                is_null = False
        dx = _field(step, ("mouse", "dx"), where, i)
        dy = _field(step, ("mouse", "dy"), where, i)
        pitch, yaw = dy * CAMERA_SCALER, dx * CAMERA_SCALER
        if vpt_compat:  # int64 assignment in the original truncates toward zero
            pitch, yaw = float(int(pitch)), float(int(yaw))
        camera[i] = (pitch, yaw)
        if dx != 0 or dy != 0:
            is_null = False
        for b, key in MOUSE_BUTTON_MAPPING.items():
            if b in buttons:
                acts[key][i] = 1
                is_null = False

        hotbar = _field(step, ("hotbar",), where, i)
        if hotbar != last_hotbar:  # scroll-wheel changes are not in the key list; after the null check
            if not (isinstance(hotbar, int) and 0 <= hotbar <= 8):
                raise EpisodeError(f"{where}: line {i + 1} has hotbar={hotbar!r}, expected 0..8")
            acts[f"hotbar.{hotbar + 1}"][i] = 1
        last_hotbar = hotbar

        keep[i] = not is_null
        gui_open[i] = bool(_field(step, ("isGuiOpen",), where, i))
        if gui_open[i]:
            cursor_xy[i] = (_field(step, ("mouse", "x"), where, i), _field(step, ("mouse", "y"), where, i))
    acts_out: dict[str, np.ndarray] = dict(acts)
    acts_out["camera"] = camera
    return ConvertedActions(keep, acts_out, gui_open, cursor_xy, stat_events(steps), inventory_changes(steps))


# --------------------------------------------------------------------------------------------------
# Video


def iter_video_frames(video_path: str | Path, threads: int = 1) -> Iterator[np.ndarray]:
    """Decode an mp4 with PyAV -> (H, W, 3) uint8 RGB frames (same pixels as cv2.VideoCapture + BGR2RGB).

    Raises EpisodeError for files that cannot be opened or decoded (corrupt, truncated, no video).
    """
    import av

    try:
        container = av.open(str(video_path))
    except (av.error.FFmpegError, OSError) as e:
        raise EpisodeError(f"{video_path}: cannot open video ({e}); the file is corrupt, truncated "
                           "or not an mp4") from None
    try:
        if not container.streams.video:
            raise EpisodeError(f"{video_path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_count = max(1, threads)
        if threads > 1:
            stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise EpisodeError(f"{video_path}: decoding failed ({e}); the file is corrupt or truncated") from None
    finally:
        container.close()


def resize_policy(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (128, 128, 3) with cv2 INTER_LINEAR (the original's `resize_image`)."""
    return cv2.resize(frame, POLICY_RESOLUTION, interpolation=cv2.INTER_LINEAR)


def resize_mineclip(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (160, 256, 3) with cv2 INTER_LINEAR (skipped when already that size, as the original)."""
    if frame.shape[:2] == (MINECLIP_RESOLUTION[1], MINECLIP_RESOLUTION[0]):
        return frame
    return cv2.resize(frame, MINECLIP_RESOLUTION, interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------------------------------
# One episode


@dataclass
class ContractorEpisode:
    """A converted episode: N kept steps (null actions dropped)."""

    frames: np.ndarray  # (N, 128, 128, 3) uint8 RGB
    frames_mineclip: np.ndarray | None  # (N, 160, 256, 3) uint8 RGB, None if not requested
    env_actions: dict[str, np.ndarray]  # 23 button keys (N,) int8 + camera (N, 2) float64 degrees
    n_lines: int = 0  # jsonl lines
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: str):  # dict-style access: ep["frames"]
        return getattr(self, key)


def read_actions(jsonl_path: str | Path, vpt_compat: bool = False) -> ConvertedActions:
    """Read and convert a contractor jsonl file (raises EpisodeError if unreadable or malformed)."""
    jsonl_path = Path(jsonl_path)
    try:
        text = jsonl_path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise EpisodeError(f"{jsonl_path}: cannot read actions ({e})") from None
    steps = parse_jsonl(text, str(jsonl_path))
    if not steps:
        raise EpisodeError(f"{jsonl_path}: no action lines (empty file)")
    return convert_actions(steps, vpt_compat=vpt_compat, where=str(jsonl_path))


def iter_kept_frames(video_path: str | Path, actions: ConvertedActions,
                     cursor_image: str | Path | np.ndarray | None = None, *, with_mineclip: bool = True,
                     expected_resolution: tuple[int, int] | None = None, max_frame_mismatch: int = 0,
                     decode_threads: int = 1) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Decode the video and yield (line index, (128,128,3) frame, (160,256,3) MineCLIP frame or None)
    for every kept (non-null) step, cursor drawn when the GUI is open. Checks the frame count at the end
    (so a consumer may have seen frames of an episode that then raises EpisodeError)."""
    cursor_rgb, cursor_alpha = load_cursor(cursor_image)
    n_lines = len(actions.keep)
    n_read = 0
    for i, frame in enumerate(iter_video_frames(video_path, threads=decode_threads)):
        n_read += 1
        if expected_resolution is not None and (frame.shape[1], frame.shape[0]) != tuple(expected_resolution):
            raise EpisodeError(f"{video_path}: frame {i} is {frame.shape[1]}x{frame.shape[0]}, expected "
                               f"{expected_resolution[0]}x{expected_resolution[1]}; set "
                               "expected_resolution=null to accept other sizes")
        if i >= n_lines:  # more frames than lines: count them (reported below)
            continue
        if not actions.keep[i]:
            continue
        if actions.gui_open[i]:
            scale = frame.shape[0] / ORIGINAL_HEIGHT_PX
            x, y = actions.cursor_xy[i]
            overlay_cursor(frame, cursor_rgb, cursor_alpha, int(x * scale), int(y * scale))
        yield i, resize_policy(frame), (resize_mineclip(frame) if with_mineclip else None)
    if n_read == 0:
        raise EpisodeError(f"{video_path}: no frames could be decoded; the video is empty or corrupt")
    if abs(n_read - n_lines) > max_frame_mismatch:
        raise EpisodeError(f"{video_path}: {n_read} video frames but {n_lines} action lines; the pair "
                           "does not match (truncated or wrong file?). To accept small differences set "
                           f"max_frame_mismatch={abs(n_read - n_lines)}")


def load_contractor_episode(video_path: str | Path, jsonl_path: str | Path, vpt_compat: bool = False,
                            cursor_image: str | Path | np.ndarray | None = None, *,
                            with_mineclip: bool = True, expected_resolution: tuple[int, int] | None = None,
                            max_frame_mismatch: int = 0, decode_threads: int = 1) -> ContractorEpisode:
    """Convert one contractor recording (see the module docstring).

    vpt_compat:          truncate camera degrees toward zero like the original (off by default).
    cursor_image:        PNG path/RGBA array for the GUI cursor; None draws our own arrow sprite.
    with_mineclip:       also produce the 160x256 MineCLIP frames.
    expected_resolution: (W, H) every video frame must have, e.g. (640, 360); None accepts any size.
    max_frame_mismatch:  how many frames the video may have more or fewer than the jsonl has lines
                         (the original silently ignores any difference; here it is an error by default).
    """
    actions = read_actions(jsonl_path, vpt_compat)
    frames, frames_mc, kept = [], [], []
    for i, frame, frame_mc in iter_kept_frames(
            video_path, actions, cursor_image, with_mineclip=with_mineclip,
            expected_resolution=expected_resolution, max_frame_mismatch=max_frame_mismatch,
            decode_threads=decode_threads):
        frames.append(frame)
        frames_mc.append(frame_mc)
        kept.append(i)
    idx = np.asarray(kept, np.int64)
    n = len(idx)
    return ContractorEpisode(
        frames=np.stack(frames) if n else np.zeros((0, 128, 128, 3), np.uint8),
        frames_mineclip=(np.stack(frames_mc) if n else np.zeros((0, 160, 256, 3), np.uint8))
        if with_mineclip else None,
        env_actions={k: v[idx] for k, v in actions.env_actions.items()},
        n_lines=len(actions.keep), meta={"kept_lines": idx, "vpt_compat": vpt_compat})


def pack_env_buttons(env_actions: dict[str, np.ndarray]) -> np.ndarray:
    """The 23 MineRL button keys as one int32 bitmask per step (bit i = ENV_BUTTON_KEYS[i])."""
    n = len(env_actions["camera"])
    out = np.zeros(n, np.int32)
    for bit, key in enumerate(ENV_BUTTON_KEYS):
        if key in env_actions:
            out |= (np.asarray(env_actions[key]).astype(np.int32) & 1) << bit
    return out


def unpack_env_buttons(bits: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of `pack_env_buttons` (camera not included)."""
    bits = np.asarray(bits, np.int32)
    return {key: ((bits >> bit) & 1).astype(np.int8) for bit, key in enumerate(ENV_BUTTON_KEYS)}
