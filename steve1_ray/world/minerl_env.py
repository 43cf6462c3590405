"""Real Minecraft through MineRL 1.0 `HumanSurvival`, behind the world interface (`steve1_ray.world.env`).

MineRL is imported only when this backend is chosen. It needs the `minerl` extra
(`pip install -e '.[minerl]'`: minerl==1.0.2, gym==0.23.1) and a Java 8 JDK, because MineRL builds and runs
Minecraft 1.16 itself; headless machines also need `xvfb-run`. It cannot run on our CI machines, so its
conversions are tested against a faithful fake of MineRL's gym interface (tests/test_world_minerl.py).

Conversions:
- action: our dict (partial, batch-of-one arrays accepted) -> MineRL's full dict: the 23 buttons as ints,
  `camera` float32 (2,) [pitch, yaw] degrees. Same keys and meaning, so nothing is remapped.
- obs: MineRL's obs dict -> {"pov": (360, 640, 3) uint8 RGB} (MineRL's pov is already RGB).
- info: `inventory` (item -> count, non-zero items of obs["inventory"]), `achievements` (non-zero MineRL
  statistics, e.g. "mine_block.oak_log", "craft_item.crafting_table", "kill_entity.cow"), `player_pos`,
  `life`, `isGuiOpen` (MineRL's monitor) and MineRL's own info under `minerl_info`.
Settings default to the ones VPT and STEVE-1 use (ENV_KWARGS: 640x360, fov 70, gamma 2, gui scale 1).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from steve1_ray.world.env import BUTTON_KEYS, WorldEnv, normalize_action

# VPT agent.py ENV_KWARGS, also used by STEVE-1's data generation and evaluation.
ENV_KWARGS: dict[str, Any] = dict(fov_range=[70, 70], frameskip=1, gamma_range=[2, 2], guiscale_range=[1, 1],
                                  resolution=[640, 360], cursor_size_range=[16.0, 16.0])
STAT_GROUPS = ("mine_block", "craft_item", "kill_entity", "pickup", "use_item", "break_item", "drop",
               "damage_dealt", "entity_killed_by")
INSTALL_HINT = (
    "the minerl world backend needs MineRL 1.0 and Java 8: install the extra with "
    "`pip install -e '.[minerl]'` (minerl==1.0.2, gym==0.23.1), install a Java 8 JDK "
    "(e.g. `apt-get install openjdk-8-jdk`, JAVA_HOME pointing at it) and run headless under `xvfb-run`. "
    "Without them use the embedded world: world.backend=crafter")


class BackendUnavailable(ImportError):
    """The chosen world backend is not installed; the message says what to install."""


def _human_survival_class():
    try:
        from minerl.herobraine.env_specs.human_survival_specs import HumanSurvival
    except ImportError as e:
        raise BackendUnavailable(f"{INSTALL_HINT} (import failed: {e})") from e
    return HumanSurvival


def to_minerl_action(action: Mapping[str, Any]) -> dict[str, Any]:
    """Our action dict -> the full MineRL HumanSurvival action (23 int buttons + float32 camera)."""
    act = normalize_action(action)
    out: dict[str, Any] = {k: int(act[k]) for k in BUTTON_KEYS}
    out["camera"] = np.asarray(act["camera"], np.float32).reshape(2)
    return out


def _nonzero_stats(obs: Mapping[str, Any]) -> dict[str, int]:
    stats: dict[str, int] = {}
    for group in STAT_GROUPS:
        values = obs.get(group)
        if not isinstance(values, Mapping):
            continue
        for item, v in values.items():
            n = int(np.asarray(v).reshape(-1)[0]) if np.asarray(v).size else 0
            if n:
                stats[f"{group}.{item}"] = n
    return stats


def from_minerl_obs(obs: Mapping[str, Any], minerl_info: Mapping[str, Any] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """MineRL obs (+ its info/monitors) -> (our obs, our info)."""
    if "pov" not in obs:
        raise ValueError(f"MineRL observation without 'pov' (keys: {sorted(obs)}); is this HumanSurvival?")
    pov = np.asarray(obs["pov"])
    if pov.dtype != np.uint8 or pov.ndim != 3 or pov.shape[2] != 3:
        raise ValueError(f"MineRL pov has shape {pov.shape} {pov.dtype}; expected (H, W, 3) uint8 RGB")
    inventory = {str(k): int(np.asarray(v).reshape(-1)[0]) for k, v in dict(obs.get("inventory", {})).items()}
    loc = dict(obs.get("location_stats", {}) or (minerl_info or {}).get("location_stats", {}) or {})
    life = dict(obs.get("life_stats", {}) or {})
    minerl_info = dict(minerl_info or {})
    info = {
        "inventory": {k: v for k, v in inventory.items() if v and k != "air"},
        "achievements": _nonzero_stats(obs),
        "player_pos": (float(np.asarray(loc.get("xpos", 0.0))), float(np.asarray(loc.get("zpos", 0.0)))),
        "life": float(np.asarray(life.get("life", 0.0))),
        "isGuiOpen": bool(np.asarray(minerl_info.get("isGuiOpen", False))),
        "minerl_info": minerl_info,
    }
    return {"pov": pov}, info


class MineRLEnv(WorldEnv):
    """MineRL 1.0 HumanSurvival with our action/obs/info conventions.

    Args:
        max_steps: end the episode (done=True) after this many steps; None = MineRL's own end only.
        **env_kwargs: HumanSurvival settings overriding ENV_KWARGS (e.g. resolution=[640, 360]).
    """

    backend = "minerl"

    def __init__(self, max_steps: int | None = 36000, **env_kwargs):
        HumanSurvival = _human_survival_class()
        self.env_kwargs = {**ENV_KWARGS, **env_kwargs}
        self._env = HumanSurvival(**self.env_kwargs).make()
        self.max_steps = max_steps
        self.frame_size = tuple(int(v) for v in self.env_kwargs["resolution"])  # (W, H)
        self.seed: int | None = None
        self.last_obs: dict[str, Any] = {}
        self.last_info: dict[str, Any] = {}
        self._t = 0
        self._done = True
        self._started = False

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        if seed is not None:
            if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
                raise ValueError(f"seed={seed!r} must be a non-negative integer (or None)")
            self._env.seed(int(seed))  # MineRL applies a seed to the next reset only
        self.seed = None if seed is None else int(seed)
        raw = self._env.reset()
        self.last_obs = raw
        obs, self.last_info = from_minerl_obs(raw)
        self._t, self._done, self._started = 0, False, True
        return obs

    def step(self, action: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], float, bool, dict]:
        if not self._started:
            raise RuntimeError("step() before reset(); call env.reset(seed) first")
        if self._done:
            raise RuntimeError("step() after the episode ended (done=True); call env.reset(seed)")
        raw, reward, done, minerl_info = self._env.step(to_minerl_action(action))
        self._t += 1
        self.last_obs = raw
        obs, info = from_minerl_obs(raw, minerl_info)
        info["step"] = self._t
        self._done = bool(done) or (self.max_steps is not None and self._t >= self.max_steps)
        self.last_info = info
        return obs, float(reward), self._done, info

    def close(self) -> None:
        self._done, self._started = True, False
        self._env.close()
