"""The embedded world as a Gymnasium environment, beside the MineRL-style interface (`steve1_ray.world.env`).

    import gymnasium as gym
    import steve1_ray.world.gym                                   # registers the id
    env = gym.make("steve1_ray/EmbeddedWorld-v0", tree_logs=4)    # any WorldConfig field of the crafter backend
    obs, info = env.reset(seed=7)                                 # obs["pov"]: (360, 640, 3) uint8 RGB
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

Observations are `{"pov": Box(0, 255, (H, W, 3), uint8)}`; actions are the MineRL action dict as a `Dict` space:
each of the 23 buttons `Discrete(2)`, `camera` `Box(-180, 180, (2,), float32)` degrees [pitch, yaw]. `terminated`
when the player dies, `truncated` at `max_steps`. `info` has `inventory` and `achievements` (name -> count), as
in the MineRL-style interface. `render_mode="rgb_array"` renders the current frame.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from steve1_ray.world.config import WorldConfig
from steve1_ray.world.env import BUTTON_KEYS, CAMERA_LIMIT

ENV_ID = "steve1_ray/EmbeddedWorld-v0"


class EmbeddedWorldEnv(gym.Env):
    """Gymnasium API over the crafter backend of `WorldConfig` (the quick start's, serving's and evaluation's)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, render_mode: str | None = None, max_steps: int = 1000, **world: Any):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r}: use None or 'rgb_array'")
        self.world = WorldConfig(**{"backend": "crafter", **world})
        if self.world.backend != "crafter":
            raise ValueError("EmbeddedWorldEnv plays the embedded (crafter) world; MineRL has its own gym package")
        self.render_mode, self.max_steps = render_mode, int(max_steps)
        self._env = self.world.make(max_steps=self.max_steps)
        shape = (self.world.frame_height, self.world.frame_width, 3)
        self.observation_space = spaces.Dict({"pov": spaces.Box(0, 255, shape, np.uint8)})
        self.action_space = spaces.Dict({**{k: spaces.Discrete(2) for k in BUTTON_KEYS},
                                         "camera": spaces.Box(-CAMERA_LIMIT, CAMERA_LIMIT, (2,), np.float32)})
        self._pov: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        world_seed = int(self.np_random.integers(0, 2**31 - 1)) if seed is None else int(seed)
        obs = self._env.reset(seed=world_seed)
        self._pov = obs["pov"]
        return {"pov": obs["pov"]}, dict(self._env.last_info)

    def step(self, action: dict):
        obs, reward, done, info = self._env.step(action)
        self._pov = obs["pov"]
        died = done and float(info.get("discount", 1.0)) == 0.0
        return {"pov": obs["pov"]}, float(reward), bool(died), bool(done and not died), info

    def render(self):
        if self.render_mode == "rgb_array":
            return None if self._pov is None else self._pov.copy()
        return None

    def close(self):
        self._env.close()


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=EmbeddedWorldEnv)
