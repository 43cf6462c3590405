"""Small synthetic contractor-format episodes (mp4 + jsonl) for tests and benchmarks.

The frames are smooth colour fields with a moving block; the actions cycle through keys, camera
moves, null steps, hotbar scrolls and GUI-open steps, so every conversion rule is exercised.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def synthetic_lines(n: int, seed: int = 0, null_every: int = 7, gui_every: int = 11) -> list[dict]:
    """n contractor jsonl lines (dicts)."""
    rng = np.random.default_rng(seed)
    keys_pool = [[], ["key.keyboard.w"], ["key.keyboard.w", "key.keyboard.space"], ["key.keyboard.a"],
                 ["key.keyboard.d", "key.keyboard.left.control"], ["key.keyboard.s"], ["key.keyboard.1"]]
    lines, hotbar = [], 0
    for t in range(n):
        null = null_every > 0 and t % null_every == null_every - 1
        gui = gui_every > 0 and t % gui_every == 0 and not null
        if not null and t % 13 == 5:
            hotbar = int(rng.integers(0, 9))
        keys = [] if null else keys_pool[int(rng.integers(0, len(keys_pool)))]
        dx, dy = (0.0, 0.0) if null else (float(rng.integers(-30, 31)), float(rng.integers(-10, 11)))
        buttons = [] if null else ([0] if rng.random() < 0.3 else [])
        x, y = float(rng.uniform(0, 1280)), float(rng.uniform(0, 720))
        lines.append({
            "mouse": {"x": x, "y": y, "dx": dx, "dy": dy, "scaledX": x - 640, "scaledY": y - 360, "dwheel": 0.0,
                      "buttons": buttons, "newButtons": buttons},
            "keyboard": {"keys": keys, "newKeys": [], "chars": ""},
            "isGuiOpen": gui, "isGuiInventory": gui, "hotbar": hotbar, "yaw": 0.0, "pitch": 0.0,
            "xpos": 0.0, "ypos": 64.0, "zpos": 0.0, "tick": t, "milli": 50 * t, "inventory": [],
            "serverTick": t, "serverTickDurationMs": 1.0, "stats": {}})
    return lines


_BASE: dict[tuple[int, int], np.ndarray] = {}


def synthetic_frame(t: int, width: int = 640, height: int = 360) -> np.ndarray:
    """(height, width, 3) uint8 RGB frame number t."""
    if (width, height) not in _BASE:
        yy, xx = np.mgrid[0:height, 0:width]
        _BASE[(width, height)] = np.stack([(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)),
                                           np.zeros_like(xx)], -1).astype(np.uint8)
    img = _BASE[(width, height)].copy()
    img[..., 2] = (t * 5) % 256
    x0 = (t * 9) % max(width - 60, 1)
    img[height // 4:height // 4 + 60, x0:x0 + 60] = (220, 30 + t % 200, 90)
    return img


def write_episode(folder: str | Path, n: int, seed: int = 0, width: int = 640, height: int = 360,
                  n_video_frames: int | None = None) -> Path:
    """<folder>/video.mp4 + <folder>/actions.jsonl with n lines (and n_video_frames frames, default n)."""
    from steve1_ray.world.video import Mp4Writer  # PyAV only when writing

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "actions.jsonl", "w") as f:
        for line in synthetic_lines(n, seed):
            f.write(json.dumps(line) + "\n")
    m = n if n_video_frames is None else n_video_frames
    video = Mp4Writer(folder / "video.mp4", crf=30, preset="veryfast")
    for t in range(m):
        video.add(synthetic_frame(t + seed, width, height))
    video.finish()
    return folder
