"""The Gymnasium adapter of the embedded world passes Gymnasium's own environment checker."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

import steve1_ray.world.gym as wg


def test_gymnasium_make_and_env_checker():
    env = gym.make(wg.ENV_ID, tree_logs=4, max_steps=50, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)  # spaces, seeding determinism, reset/step signatures
    obs, info = env.reset(seed=3)
    assert obs["pov"].shape == (360, 640, 3) and obs["pov"].dtype == np.uint8 and "inventory" in info
    again, _ = env.reset(seed=3)
    assert np.array_equal(obs["pov"], again["pov"])
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
    assert truncated and not terminated and steps == 50  # the time limit, not a death
    assert env.render().shape == (360, 640, 3)
    env.close()
