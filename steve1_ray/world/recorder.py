"""Record world episodes in OpenAI's VPT contractor format (mp4 + jsonl), so the real ingestion runs on them.

Per episode: `<name>.mp4` (H.264, yuv420p, 20 fps, the env's 640x360 frames) and `<name>.jsonl` with one
line per video frame, the fields of the contractor recorder:

    {"mouse": {"x", "y", "dx", "dy", "scaledX", "scaledY", "dwheel", "buttons", "newButtons"},
     "keyboard": {"keys", "newKeys", "chars"}, "isGuiOpen", "isGuiInventory", "hotbar",
     "yaw", "pitch", "xpos", "ypos", "zpos", "tick", "milli", "inventory", "serverTick",
     "serverTickDurationMs", "stats"}

Line i holds the action taken while frame i was on screen (frame i = the observation before action i).
Keys are Minecraft key names (`key.keyboard.w`, ...), mouse buttons 0/1/2 = attack/use/pickItem, the camera
is written as mouse counts: dx = yaw / 0.15, dy = pitch / 0.15 (360/2400 degrees per count); cameras that
are multiples of 3 degrees map back exactly, also under VPT's integer truncation. `hotbar` is the
selected slot 0..8. The world state fields (position, inventory, stats) come from the env's info.

`Recorder` writes one episode (to temporary names, renamed on `close()`, so a crash never leaves a
half-written pair that looks complete). `record_episode` plays one demonstrator episode into a Recorder.
The layouts: contractor `<dir>/<name>.mp4|.jsonl`, or custom `<dir>/<name>/{video.mp4, actions.jsonl}`.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from steve1_ray.actions import DEGREES_PER_MOUSE_COUNT
from steve1_ray.world.env import BUTTON_KEYS, is_null_action, normalize_action, pressed_hotbar
from steve1_ray.world.video import FPS, Mp4Writer

CAMERA_SCALER = DEGREES_PER_MOUSE_COUNT  # degrees per recorded mouse count
# MineRL button -> contractor key name (the inverse of VPT's KEYBOARD_BUTTON_MAPPING).
KEY_NAMES: dict[str, str] = {
    "ESC": "key.keyboard.escape", "back": "key.keyboard.s", "drop": "key.keyboard.q",
    "forward": "key.keyboard.w", **{f"hotbar.{i}": f"key.keyboard.{i}" for i in range(1, 10)},
    "inventory": "key.keyboard.e", "jump": "key.keyboard.space", "left": "key.keyboard.a",
    "right": "key.keyboard.d", "sneak": "key.keyboard.left.shift", "sprint": "key.keyboard.left.control",
    "swapHands": "key.keyboard.f",
}
MOUSE_BUTTONS: dict[str, int] = {"attack": 0, "use": 1, "pickItem": 2}
assert set(KEY_NAMES) | set(MOUSE_BUTTONS) == set(BUTTON_KEYS)
SCREEN = (1280, 720)  # the contractors' 720p screen; mouse x/y are in its pixels


class ContractorLines:
    """Turns a stream of MineRL actions (+ env info) into contractor jsonl lines; keeps the held-key state."""

    def __init__(self, start_milli: int = 1_650_000_000_000):
        self.tick = 0
        self.hotbar = 0
        self.yaw = 0.0
        self.pitch = 0.0
        self.start_milli = int(start_milli)
        self._keys: list[str] = []
        self._buttons: list[int] = []
        self.max_camera_error = 0.0  # degrees lost to rounding mouse counts (0 for multiples of 0.15)

    def line(self, action: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> dict:
        act = normalize_action(action)
        keys = [name for k, name in KEY_NAMES.items() if act[k]]
        buttons = [b for k, b in MOUSE_BUTTONS.items() if act[k]]
        slot = pressed_hotbar(act)
        if slot is not None:
            self.hotbar = slot
        pitch_deg, yaw_deg = (float(v) for v in act["camera"])
        dy, dx = round(pitch_deg / CAMERA_SCALER), round(yaw_deg / CAMERA_SCALER)
        self.max_camera_error = max(self.max_camera_error, abs(dy * CAMERA_SCALER - pitch_deg),
                                    abs(dx * CAMERA_SCALER - yaw_deg))
        info = info or {}
        pos = info.get("player_pos", (0, 0))
        line = {
            "mouse": {"x": SCREEN[0] / 2, "y": SCREEN[1] / 2, "dx": float(dx), "dy": float(dy),
                      "scaledX": SCREEN[0] / 4, "scaledY": SCREEN[1] / 4, "dwheel": 0.0,
                      "buttons": buttons, "newButtons": [b for b in buttons if b not in self._buttons]},
            "keyboard": {"keys": keys, "newKeys": [k for k in keys if k not in self._keys], "chars": ""},
            "isGuiOpen": bool(info.get("isGuiOpen", False)),
            "isGuiInventory": False,
            "hotbar": self.hotbar,
            "yaw": round(self.yaw, 4),
            "pitch": round(self.pitch, 4),
            "xpos": float(pos[0]) + 0.5,
            "ypos": 64.0,
            "zpos": float(pos[1]) + 0.5,
            "tick": self.tick,
            "milli": self.start_milli + 50 * self.tick,
            "inventory": [{"type": k, "quantity": int(v)} for k, v in info.get("inventory", {}).items()
                          if int(v) > 0],
            "serverTick": self.tick,
            "serverTickDurationMs": 50.0,
            "stats": {f"crafter:{k}": int(v) for k, v in info.get("achievements", {}).items() if int(v) > 0},
        }
        self._keys, self._buttons = keys, buttons
        self.tick += 1
        self.yaw = (self.yaw + dx * CAMERA_SCALER + 180.0) % 360.0 - 180.0
        self.pitch = float(np.clip(self.pitch + dy * CAMERA_SCALER, -90.0, 90.0))
        return line


def episode_paths(out_dir: str | Path, name: str, layout: str = "contractor") -> tuple[Path, Path]:
    """(video, jsonl) paths of episode `name` under `out_dir` in the given layout."""
    out_dir = Path(out_dir)
    if layout == "contractor":
        return out_dir / f"{name}.mp4", out_dir / f"{name}.jsonl"
    if layout == "custom":
        return out_dir / name / "video.mp4", out_dir / name / "actions.jsonl"
    raise ValueError(f"layout={layout!r}; choose 'contractor' (<name>.mp4 + <name>.jsonl) or "
                     "'custom' (<name>/video.mp4 + <name>/actions.jsonl)")


class Recorder:
    """Writes one episode: call `add(frame, action, info)` per step, then `close()`.

    `frame` is the observation the action was chosen on (obs["pov"]), `info` the env info that came with
    that observation (None for the first frame if the backend gives none).
    """

    def __init__(self, video_path: str | Path, jsonl_path: str | Path, frame_size: tuple[int, int] = (640, 360),
                 fps: int = FPS, crf: int = 23, preset: str = "superfast", threads: int = 1,
                 start_milli: int = 1_650_000_000_000):
        self.video_path, self.jsonl_path = Path(video_path), Path(jsonl_path)
        self.video_path.parent.mkdir(parents=True, exist_ok=True)
        self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_video = self.video_path.with_name(self.video_path.name + ".part")
        self._tmp_jsonl = self.jsonl_path.with_name(self.jsonl_path.name + ".part")
        self._video = Mp4Writer(self._tmp_video, size=frame_size, fps=fps, crf=crf, preset=preset, threads=threads)
        self._jsonl = open(self._tmp_jsonl, "w")
        self.lines = ContractorLines(start_milli)
        self.n_frames = 0
        self.n_null = 0  # lines the ingestion will drop as null actions
        self.closed = False

    def add(self, frame: np.ndarray, action: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> None:
        if self.closed:
            raise RuntimeError(f"recorder for {self.video_path} is closed")
        self._video.add(frame)
        self._jsonl.write(json.dumps(self.lines.line(action, info), separators=(",", ":")) + "\n")
        self.n_null += is_null_action(action)
        self.n_frames += 1

    def close(self) -> None:
        """Finish both files and move them to their final names."""
        if self.closed:
            return
        self.closed = True
        self._video.finish()
        self._jsonl.close()
        os.replace(self._tmp_jsonl, self.jsonl_path)
        os.replace(self._tmp_video, self.video_path)

    def abort(self) -> None:
        """Drop a partial episode (both temporary files)."""
        self.closed = True
        for closer in (self._video.finish, self._jsonl.close):
            try:
                closer()
            except Exception:  # noqa: BLE001 - best effort cleanup of a failed episode
                pass
        for p in (self._tmp_video, self._tmp_jsonl):
            p.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass
class EpisodeRecord:
    """What one recorded episode holds (also written as `<out>/meta/<name>.json`)."""
    name: str
    seed: int
    video: str  # path relative to the dataset root
    actions: str
    n_frames: int
    n_null: int
    achievements: dict[str, int]
    segments: list[dict] = field(default_factory=list)
    died: bool = False
    env_steps_per_s: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    focus: str | None = None  # the goal a task episode prefers (None: free play)
    driven_frames: int = 0  # frames whose executed action was the driver policy's (the recorded one: the demonstrator's)

    def to_dict(self) -> dict:
        return asdict(self)


def record_episode(root: str | Path, name: str, seed: int, max_steps: int = 1000, layout: str = "contractor",
                   env_kwargs: Mapping[str, Any] | None = None, demo_kwargs: Mapping[str, Any] | None = None,
                   crf: int = 23, preset: str = "superfast", keep_frames: bool = False,
                   driver: Callable[[np.ndarray], Mapping[str, Any]] | None = None,
                   driver_share: float = 0.0) -> EpisodeRecord:
    """Play one scripted-demonstrator episode in the crafter world and record it under `root`.

    With a `driver` (frame -> action, e.g. a trained policy's step) the episode is a DAgger round (Ross et al.,
    2011): on each frame the driver's action is the one played with probability `driver_share` (else the
    demonstrator's), but the recorded action is always the demonstrator's, so the recording labels the states the
    driver gets itself into (stuck at a stone it cannot mine, say) with what the demonstrator would do there. The
    driver is stepped on every frame, so its memory sees the whole episode; its `sleep` is never played (crafter
    would ignore every action until the player wakes).

    Files: contractor layout `<root>/contractor/<name>.mp4|.jsonl`, custom `<root>/<name>/...`.
    Returns the EpisodeRecord (paths relative to root). With keep_frames the raw frames and actions are
    attached as `record.played_frames` / `record.played_actions` (for tests).
    """
    from steve1_ray.world.crafter_env import CrafterEnv
    from steve1_ray.world.demonstrators import Demonstrator

    root = Path(root)
    sub = root / "contractor" if layout == "contractor" else root
    video, jsonl = episode_paths(sub, name, layout)
    env = CrafterEnv(max_steps=max_steps, **dict(env_kwargs or {}))
    demo = Demonstrator(env, seed=seed, **dict(demo_kwargs or {}))
    t0, c0 = time.perf_counter(), time.process_time()
    obs = env.reset(seed)
    demo.reset()
    info = env.last_info
    frames, actions = [], []
    done, driven = False, 0
    pick = np.random.default_rng([int(seed), 104729])  # which frames the driver plays: a function of the seed
    with Recorder(video, jsonl, frame_size=env.frame_size, crf=crf, preset=preset) as rec:
        while not done:
            action = demo.act()
            rec.add(obs["pov"], action, info)
            if keep_frames:
                frames.append(obs["pov"])
                actions.append(normalize_action(action))
            played = action
            if driver is not None:
                proposed = driver(obs["pov"])
                # not the driver's `sleep`: crafter would then ignore every action until the player wakes, and the
                # recording would label a stretch of sleep with moves that did nothing
                if pick.random() < driver_share and env.crafter_name(proposed) != "sleep":
                    played, driven = proposed, driven + 1
            obs, _, done, info = env.step(played)
    segments = [s.to_dict() for s in demo.finish()]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    record = EpisodeRecord(
        name=name, seed=int(seed), video=str(video.relative_to(root)), actions=str(jsonl.relative_to(root)),
        n_frames=rec.n_frames, n_null=rec.n_null,
        achievements={k: int(v) for k, v in info["achievements"].items() if v},
        segments=segments, died=bool(env.player.health <= 0), seconds=seconds, cpu_seconds=cpu,
        env_steps_per_s=rec.n_frames / max(seconds, 1e-9), focus=demo.focus, driven_frames=driven)
    if keep_frames:
        record.played_frames, record.played_actions = frames, actions  # type: ignore[attr-defined]
    return record
