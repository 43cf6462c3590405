"""The world interface: one MineRL-shaped environment API with two backends (crafter, minerl).

    env = make_env("crafter")            # (steve1_ray.world.config) or "minerl" where MineRL + Java 8 are installed
    obs = env.reset(seed=7)              # obs["pov"]: (360, 640, 3) uint8 RGB
    obs, reward, done, info = env.step({"forward": 1, "camera": [0.0, 3.0]})

Actions are MineRL HumanSurvival action dicts: 23 buttons (0/1) and `camera` = [pitch, yaw] in degrees.
Missing keys count as 0; values may carry a batch dim of 1 (as VPT/STEVE-1 agents emit them).
`info` always has `inventory` (dict name -> count) and `achievements` (dict name -> count).
Rollout code only uses this module's names, never a backend's.
"""
from __future__ import annotations

import abc
import math
from typing import Any, Mapping

import numpy as np

from steve1_ray.actions import DEGREES_PER_MOUSE_COUNT

# The 23 MineRL button keys (TARGET_ACTION_SPACE order) + camera: same as steve1_ray.actions.ENV_KEYS.
BUTTON_KEYS: tuple[str, ...] = (
    "ESC", "attack", "back", "drop", "forward", *(f"hotbar.{i}" for i in range(1, 10)), "inventory",
    "jump", "left", "pickItem", "right", "sneak", "sprint", "swapHands", "use",
)
ACTION_KEYS: tuple[str, ...] = BUTTON_KEYS + ("camera",)
FRAME_SHAPE = (360, 640, 3)  # (H, W, C) of obs["pov"], MineRL's 640x360
CAMERA_LIMIT = 180.0  # MineRL's camera Box bounds, degrees


class ActionError(ValueError):
    """An action dict cannot be applied; the message names the key and the fix."""


def noop_action() -> dict[str, Any]:
    """All buttons released, camera still."""
    action: dict[str, Any] = {k: 0 for k in BUTTON_KEYS}
    action["camera"] = np.zeros(2, np.float32)
    return action


def _scalar(value: Any, key: str) -> Any:
    arr = np.asarray(value)
    if arr.size != 1:
        raise ActionError(f"action[{key!r}] has shape {arr.shape}; a button is one 0/1 value "
                          "(a batch of one, shape (1,), is also accepted)")
    return arr.reshape(()).item()


def normalize_action(action: Mapping[str, Any]) -> dict[str, Any]:
    """Any MineRL-style action -> a full dict: ints 0/1 for the 23 buttons, camera float32 (2,) degrees.

    Accepts partial dicts, NumPy/torch scalars and batch-of-one arrays. Unknown keys, non-binary
    buttons and non-finite or out-of-range cameras raise `ActionError`.
    """
    if not isinstance(action, Mapping):
        raise ActionError(f"an action must be a dict of MineRL keys, got {type(action).__name__}")
    unknown = sorted(set(action) - set(ACTION_KEYS))
    if unknown:
        raise ActionError(f"unknown action key(s) {unknown}; known keys: {list(ACTION_KEYS)}")
    out = noop_action()
    for key in BUTTON_KEYS:
        if key not in action:
            continue
        v = _scalar(action[key], key)
        if v not in (0, 1, True, False):
            raise ActionError(f"action[{key!r}] = {v!r}; buttons take 0 or 1")
        out[key] = int(v)
    if "camera" in action:
        cam = np.asarray(action["camera"], np.float64).reshape(-1)
        if cam.size != 2:
            raise ActionError(f"action['camera'] has {cam.size} values; it is [pitch, yaw] in degrees "
                              "(shape (2,) or (1, 2))")
        if not np.all(np.isfinite(cam)) or np.any(np.abs(cam) > CAMERA_LIMIT):
            raise ActionError(f"action['camera'] = {cam.tolist()}; each angle must be finite and within "
                              f"[-{CAMERA_LIMIT:g}, {CAMERA_LIMIT:g}] degrees")
        out["camera"] = cam.astype(np.float32)
    return out


def pressed_hotbar(action: Mapping[str, Any]) -> int | None:
    """The hotbar slot (0..8) an action selects, or None. Several pressed: the highest number wins
    (as in VPT's action mapping)."""
    slot = None
    for i in range(9):
        if action.get(f"hotbar.{i + 1}", 0):
            slot = i
    return slot


def is_null_action(action: Mapping[str, Any]) -> bool:
    """True when the contractor ingestion would drop this step: no button and no camera movement."""
    if any(action.get(k, 0) for k in BUTTON_KEYS):
        return False
    cam = np.asarray(action.get("camera", (0.0, 0.0)), np.float64).reshape(-1)
    return not np.any(cam != 0)


class WorldEnv(abc.ABC):
    """What rollout code drives. Two implementations: CrafterEnv (default) and MineRLEnv."""

    backend: str = ""

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Start an episode; the same seed gives the same episode. Returns obs with obs["pov"]."""

    @abc.abstractmethod
    def step(self, action: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], float, bool, dict]:
        """Apply one MineRL action dict -> (obs, reward, done, info)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the backend's resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _count_problem(key: str, n, top: int, default: str) -> str | None:
    """Why `n` is not a valid `key`, a whole number in [1, top], or None when it is (`default` says what 1 is)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= top:
        return f"{key}={n!r} must be an integer in [1, {top}] (1 = {default})"
    return None


def tree_logs_problem(n) -> str | None:
    """Why `n` is not a valid `tree_logs` (logs per tree in the embedded world), or None when it is."""
    return _count_problem("tree_logs", n, 100, "crafter's own trees")


def log_hits_problem(n) -> str | None:
    """Why `n` is not a valid `log_hits` (hits a log takes in the embedded world), or None when it is."""
    return _count_problem("log_hits", n, 100, "crafter's own trees: a log per hit")


COW_MOVE = 0.5  # crafter's cows step on every other turn (Cow.update)


def cow_herds_problem(n) -> str | None:
    """Why `n` is not a valid `cow_herds` (cows per grass tile, times crafter's), or None when it is."""
    return _count_problem("cow_herds", n, 10, "crafter's own cows")


def cow_move_problem(p) -> str | None:
    """Why `p` is not a valid `cow_move` (the chance that a cow steps on a turn), or None when it is."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0.0 <= p <= 1.0:
        return f"cow_move={p!r} must be a number in [0, 1] (0.5 = crafter's own cows)"
    return None


def camera_to_mouse(camera_deg: float) -> float:
    """Degrees -> recorded mouse counts (contractor jsonl dx/dy); 1 count = 360/2400 = 0.15 degrees."""
    return camera_deg / DEGREES_PER_MOUSE_COUNT


def is_exact_camera(camera_deg: float) -> bool:
    """Whether `camera_deg` survives the jsonl round trip exactly, also under VPT's int truncation."""
    counts = round(camera_to_mouse(camera_deg))
    back = counts * DEGREES_PER_MOUSE_COUNT
    return math.isclose(back, camera_deg, abs_tol=1e-9) and float(int(back)) == camera_deg
