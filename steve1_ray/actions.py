"""MineRL env action dicts <-> the policy's two joint indices (buttons 8641, camera 121).

The policy (VPT / STEVE-1) never sees MineRL's dict. It predicts

- ``buttons``: one joint index in [0, 8641) over the product of the button groups below plus a
  camera on/off meta action (8640 combos), and index 8640 = "inventory";
- ``camera``: one joint index in [0, 121) = ``pitch_bin * 11 + yaw_bin`` over 11 mu-law bins per axis.

This module reproduces VPT's ``ActionTransformer`` (mu-law, maxval 10, mu 10, bin size 2) and
``CameraHierarchicalMapping(n_camera_bins=11)`` bit for bit (tests/fixtures/actions holds the
golden outputs of the original code), vectorised over any leading dims (B, T, ...), for NumPy
arrays and torch tensors alike (torch in, torch out, on the input's device).

Rules of the env -> policy direction (``env_to_policy``):

- forward+back together count as neither; left+right together count as neither;
- otherwise when two buttons of one group are pressed the later one in the group wins
  (sneak beats sprint, the highest hotbar number wins);
- the camera meta action is "camera" iff the camera bins are not (5, 5);
- a pressed ``inventory`` (value exactly 1) makes the joint button 8640 (all else dropped) and
  forces the camera to the null index 60.

The policy -> env direction (``policy_to_env``) looks up the 20 factored buttons of the joint
index and forces the camera to the null bins when the combo's camera meta action is off. As in
the original, index 8640 ("inventory") does *not* force the camera to null.
"""
from __future__ import annotations

import itertools
from typing import Any, Mapping

import numpy as np

# The 20 factored buttons the policy can press, in VPT's order (``Buttons.ALL``).
BUTTONS_ALL: tuple[str, ...] = (
    "attack", "back", "forward", "jump", "left", "right", "sneak", "sprint", "use", "drop",
    "inventory", *(f"hotbar.{i}" for i in range(1, 10)),
)
# MineRL keys the policy never emits (always 0 in ``policy_to_env``).
UNUSED_BUTTONS: tuple[str, ...] = ("ESC", "pickItem", "swapHands")
# The 22 MineRL button keys + camera (VPT's TARGET_ACTION_SPACE order, camera last).
ENV_KEYS: tuple[str, ...] = (
    "ESC", "attack", "back", "drop", "forward", *(f"hotbar.{i}" for i in range(1, 10)), "inventory",
    "jump", "left", "pickItem", "right", "sneak", "sprint", "swapHands", "use", "camera",
)

# Mutually exclusive groups that make up the joint button index, in index order (last fastest,
# followed by the camera meta action). "none" is option 0 of every group.
BUTTON_GROUPS: dict[str, tuple[str, ...]] = {
    "hotbar": ("none", *(f"hotbar.{i}" for i in range(1, 10))),
    "fore_back": ("none", "forward", "back"),
    "left_right": ("none", "left", "right"),
    "sprint_sneak": ("none", "sprint", "sneak"),
    "use": ("none", "use"),
    "drop": ("none", "drop"),
    "attack": ("none", "attack"),
    "jump": ("none", "jump"),
    "camera": ("none", "camera"),
}

N_BUTTONS = 8641
N_CAMERA = 121
NULL_BUTTON = 0
NULL_CAMERA = 60
INVENTORY_BUTTON = 8640

# ActionTransformer parameters (VPT agent.py ACTION_TRANSFORMER_KWARGS).
CAMERA_MAXVAL = 10
CAMERA_BINSIZE = 2
CAMERA_MU = 10
N_CAMERA_BINS = 11
CAMERA_NULL_BIN = CAMERA_MAXVAL // CAMERA_BINSIZE  # 5

# The contractor recordings store the camera as mouse counts: 2400 counts turn the view 360 degrees (VPT's
# CAMERA_SCALER). Read by data/contractor.py, written by world/recorder.py, checked by world/env.py.
DEGREES_PER_MOUSE_COUNT = 360.0 / 2400.0  # 0.15

_BUTTON_INDEX = {name: i for i, name in enumerate(BUTTONS_ALL)}


def _build_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint index -> factored buttons (8641, 20), camera-meta-off flag (8641,), camera bins (121, 2)."""
    combos = list(itertools.product(*BUTTON_GROUPS.values()))
    assert len(combos) + 1 == N_BUTTONS
    factored = np.zeros((N_BUTTONS, len(BUTTONS_ALL)), dtype=np.int64)
    camera_off = np.zeros(N_BUTTONS, dtype=bool)
    for idx, combo in enumerate(combos):
        for choice in combo[:-1]:
            if choice != "none":
                factored[idx, _BUTTON_INDEX[choice]] = 1
        camera_off[idx] = combo[-1] == "none"
    factored[INVENTORY_BUTTON, _BUTTON_INDEX["inventory"]] = 1  # camera_off stays False (VPT quirk)
    camera_bins = np.stack(np.divmod(np.arange(N_CAMERA), N_CAMERA_BINS), axis=-1).astype(np.int64)
    return factored, camera_off, camera_bins


BUTTON_IDX_TO_FACTORED, BUTTON_IDX_TO_CAMERA_OFF, CAMERA_IDX_TO_BINS = _build_tables()
for _arr in (BUTTON_IDX_TO_FACTORED, BUTTON_IDX_TO_CAMERA_OFF, CAMERA_IDX_TO_BINS):
    _arr.setflags(write=False)


# ----------------------------------------------------------------------------------------------
# NumPy / torch plumbing: compute in NumPy (bit parity with the original), hand back the input kind.

def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _np(x: Any) -> np.ndarray:
    if _is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _like(arr: np.ndarray, ref: Any):
    """Return `arr` as the same kind as `ref` (a torch tensor on ref's device, or NumPy)."""
    if ref is not None and _is_torch(ref):
        import torch

        return torch.from_numpy(np.ascontiguousarray(arr)).to(ref.device)
    return arr


# ----------------------------------------------------------------------------------------------
# Camera: mu-law quantisation in degrees <-> bins 0..10 per axis.

def _discretize(deg: np.ndarray) -> np.ndarray:
    if deg.dtype.kind not in "iuf":
        raise TypeError(f"camera must be a numeric array of degrees, got dtype {deg.dtype}")
    if deg.dtype.kind == "f" and not np.all(np.isfinite(deg)):
        raise ValueError("camera contains NaN or inf degrees; pass finite [pitch, yaw] values")
    # The operation order and scalar types follow VPT's CameraQuantizer exactly, so that ties
    # (np.round is half-to-even) land in the same bins for float32 and float64 inputs.
    x = np.clip(deg, -CAMERA_MAXVAL, CAMERA_MAXVAL)
    x = x / CAMERA_MAXVAL
    x = np.sign(x) * (np.log(1.0 + CAMERA_MU * np.abs(x)) / np.log(1.0 + CAMERA_MU))
    x *= CAMERA_MAXVAL
    return np.round((x + CAMERA_MAXVAL) / CAMERA_BINSIZE).astype(np.int64)


def _undiscretize(bins: np.ndarray) -> np.ndarray:
    x = bins * CAMERA_BINSIZE - CAMERA_MAXVAL
    x = x / CAMERA_MAXVAL
    x = np.sign(x) * (1.0 / CAMERA_MU) * ((1.0 + CAMERA_MU) ** np.abs(x) - 1.0)
    return x * CAMERA_MAXVAL


def discretize_camera(deg):
    """Camera degrees (..., 2) [pitch, yaw] -> mu-law bins (..., 2) int64 in [0, 10]; clips at ±10°."""
    return _like(_discretize(_np(deg)), deg)


def undiscretize_camera(bins):
    """Mu-law bins (..., 2) in [0, 10] -> camera degrees (..., 2) float64 (bin centres)."""
    b = _np(bins)
    if b.size and (b.min() < 0 or b.max() >= N_CAMERA_BINS):
        raise ValueError(f"camera bins must lie in [0, {N_CAMERA_BINS - 1}], got range "
                         f"[{b.min()}, {b.max()}]")
    return _like(_undiscretize(b.astype(np.int64)), bins)


# ----------------------------------------------------------------------------------------------
# Factored (20 buttons + 2 camera bins) <-> joint (buttons index, camera index).

def _group_choice(pressed: np.ndarray, names: tuple[str, ...], cancel_if_both: bool) -> np.ndarray:
    """Option index in the group (0 = none); the last pressed button of the group wins."""
    cols = pressed[..., [_BUTTON_INDEX[n] for n in names]]
    if cancel_if_both:
        cols = cols & ~np.all(cols, axis=-1, keepdims=True)
    choice = np.zeros(cols.shape[:-1], dtype=np.int64)
    for option, col in enumerate(np.moveaxis(cols, -1, 0), start=1):
        choice = np.where(col, option, choice)
    return choice


def factored_to_joint(buttons, camera_bins):
    """Factored buttons (..., 20) + camera bins (..., 2) -> joint (buttons (...), camera (...)) int64.

    A button counts as pressed when non-zero; ``inventory`` must be exactly 1 (as in VPT).
    """
    b, c = _np(buttons), _np(camera_bins)
    if b.shape[-1:] != (len(BUTTONS_ALL),):
        raise ValueError(f"factored buttons must have shape (..., {len(BUTTONS_ALL)}), got {b.shape}")
    if c.shape != b.shape[:-1] + (2,):
        raise ValueError(f"camera bins must have shape {b.shape[:-1] + (2,)}, got {c.shape}")
    if c.size and (c.min() < 0 or c.max() >= N_CAMERA_BINS):
        raise ValueError(f"camera bins must lie in [0, {N_CAMERA_BINS - 1}]; discretize degrees first")
    pressed = b != 0
    g = BUTTON_GROUPS
    joint = _group_choice(pressed, g["hotbar"][1:], False)
    joint = joint * 3 + _group_choice(pressed, g["fore_back"][1:], True)
    joint = joint * 3 + _group_choice(pressed, g["left_right"][1:], True)
    joint = joint * 3 + _group_choice(pressed, g["sprint_sneak"][1:], False)
    for name in ("use", "drop", "attack", "jump"):
        joint = joint * 2 + pressed[..., _BUTTON_INDEX[name]]
    c = c.astype(np.int64)
    camera_on = np.any(c != CAMERA_NULL_BIN, axis=-1)
    joint = joint * 2 + camera_on
    camera = c[..., 0] * N_CAMERA_BINS + c[..., 1]
    inventory = b[..., _BUTTON_INDEX["inventory"]] == 1
    joint = np.where(inventory, INVENTORY_BUTTON, joint).astype(np.int64)
    camera = np.where(inventory, NULL_CAMERA, camera).astype(np.int64)
    return _like(joint, buttons), _like(camera, buttons)


def joint_to_factored(buttons, camera):
    """Joint indices (...) -> factored buttons (..., 20) int64 and camera bins (..., 2) int64."""
    b, c = _np(buttons).astype(np.int64, copy=False), _np(camera).astype(np.int64, copy=False)
    if b.shape != c.shape:
        raise ValueError(f"buttons {b.shape} and camera {c.shape} must have the same shape")
    if b.size and (b.min() < 0 or b.max() >= N_BUTTONS):
        raise ValueError(f"button indices must lie in [0, {N_BUTTONS - 1}], got [{b.min()}, {b.max()}]")
    if c.size and (c.min() < 0 or c.max() >= N_CAMERA):
        raise ValueError(f"camera indices must lie in [0, {N_CAMERA - 1}], got [{c.min()}, {c.max()}]")
    factored = BUTTON_IDX_TO_FACTORED[b]
    bins = np.where(BUTTON_IDX_TO_CAMERA_OFF[b][..., None], CAMERA_NULL_BIN, CAMERA_IDX_TO_BINS[c])
    return _like(factored, buttons), _like(bins, buttons)


# ----------------------------------------------------------------------------------------------
# Env dicts.

def _leading_shape(env_actions: Mapping[str, Any]) -> tuple[int, ...]:
    if "camera" in env_actions:
        cam = _np(env_actions["camera"])
        if cam.shape[-1:] != (2,):
            raise ValueError(f"env action 'camera' must have shape (..., 2) [pitch, yaw], got {cam.shape}")
        return cam.shape[:-1]
    for k in BUTTONS_ALL:
        if k in env_actions:
            return _np(env_actions[k]).shape
    raise ValueError("env action has neither 'camera' nor any button key; expected MineRL keys "
                     f"{list(ENV_KEYS)}")


def env_to_policy(env_actions: Mapping[str, Any]):
    """MineRL env action dict -> (buttons (...), camera (...)) int64 joint indices.

    Each button key is an int array with the leading shape (e.g. (B, T)); ``camera`` is (..., 2)
    float degrees [pitch, yaw]. Missing keys count as 0. Returns torch if any value is a tensor.
    """
    if not isinstance(env_actions, Mapping):
        raise TypeError(f"env_to_policy expects a dict of MineRL action arrays, got {type(env_actions).__name__}")
    lead = _leading_shape(env_actions)
    ref = next((v for v in env_actions.values() if _is_torch(v)), None)
    cols = []
    for k in BUTTONS_ALL:
        v = _np(env_actions.get(k, 0))
        if v.shape != lead:
            if v.ndim == 0:
                v = np.broadcast_to(v, lead)
            else:
                raise ValueError(f"env action key {k!r} has shape {v.shape} but the camera gives leading "
                                 f"shape {lead}; every button must have the camera's leading shape")
        cols.append(v)
    factored = np.stack(cols, axis=-1)
    cam = env_actions.get("camera")
    bins = _discretize(_np(cam)) if cam is not None else np.full(lead + (2,), CAMERA_NULL_BIN, np.int64)
    joint, camera = factored_to_joint(factored, bins)
    return _like(joint, ref), _like(camera, ref)


def policy_to_env(buttons, camera) -> dict:
    """Joint indices (...) -> MineRL env dict: 20 buttons + ESC/pickItem/swapHands (= 0) as int64
    arrays of shape (...), ``camera`` (..., 2) float64 degrees. Torch in, torch out."""
    factored, bins = joint_to_factored(_np(buttons), _np(camera))
    out = {name: _like(np.ascontiguousarray(factored[..., i]), buttons) for i, name in enumerate(BUTTONS_ALL)}
    for name in UNUSED_BUTTONS:
        out[name] = _like(np.zeros(factored.shape[:-1], dtype=np.int64), buttons)
    out["camera"] = _like(_undiscretize(bins), buttons)
    return {k: out[k] for k in ENV_KEYS}


def noop_action(shape: tuple[int, ...] = ()) -> dict:
    """A MineRL env action that does nothing: every button 0 and camera (0, 0), leading dims `shape`."""
    shape = tuple(shape)
    act = {k: np.zeros(shape, dtype=np.int64) for k in ENV_KEYS if k != "camera"}
    act["camera"] = np.zeros(shape + (2,), dtype=np.float64)
    return act


NOOP_ENV_ACTION: dict = noop_action()
"""The unbatched no-op env action (copy before mutating: ``{k: v.copy() for k, v in ...}``)."""
for _arr in NOOP_ENV_ACTION.values():
    _arr.setflags(write=False)


def is_null_env_action(env_actions: Mapping[str, Any]):
    """True where the policy would see nothing: all 20 buttons 0 and the camera in the null bins.

    This is VPT agent.py's ``check_if_null`` test, elementwise over the leading dims (ESC,
    pickItem and swapHands are invisible to the policy and do not count).
    """
    lead = _leading_shape(env_actions)
    ref = next((v for v in env_actions.values() if _is_torch(v)), None)
    null = np.ones(lead, dtype=bool)
    for k in BUTTONS_ALL:
        if k in env_actions:
            null &= np.broadcast_to(_np(env_actions[k]) == 0, lead)
    if "camera" in env_actions:
        null &= np.all(_discretize(_np(env_actions["camera"])) == CAMERA_NULL_BIN, axis=-1)
    return _like(null, ref)
