"""The world: one MineRL-shaped env interface, the embedded crafter world, MineRL, demonstrators, recorder.

    from steve1_ray.world import make_env
    env = make_env("crafter")                  # default embedded world; make_env("minerl") for Minecraft
    obs = env.reset(seed=0)                    # obs["pov"] (360, 640, 3) uint8 RGB
    obs, reward, done, info = env.step({"attack": 1})   # info["inventory"], info["achievements"]

Modules: env (the interface), config (WorldConfig, make_env), crafter_env (adapter table), minerl_env,
demonstrators (GOALS, captions), recorder (contractor-format writer), video (mp4 writer, prompt overlay),
record (the Ray job: `steve1 record`), gym (the embedded world as the Gymnasium env `steve1_ray/EmbeddedWorld-v0`).
See docs/world.md.
"""
from steve1_ray.world.config import WorldConfig, make_env
from steve1_ray.world.env import (ACTION_KEYS, BUTTON_KEYS, FRAME_SHAPE, ActionError, WorldEnv, is_null_action,
                                  noop_action, normalize_action)

__all__ = ["ACTION_KEYS", "BUTTON_KEYS", "FRAME_SHAPE", "ActionError", "WorldEnv", "WorldConfig", "is_null_action",
           "make_env", "noop_action", "normalize_action", "CrafterEnv", "Demonstrator", "GOALS", "Recorder",
           "record_episode", "record_episodes", "RecordConfig"]


def __getattr__(name):  # lazy: importing the package does not load crafter, PyAV or Ray
    if name == "CrafterEnv":
        from steve1_ray.world.crafter_env import CrafterEnv
        return CrafterEnv
    if name in ("Demonstrator", "GOALS"):
        from steve1_ray.world import demonstrators
        return getattr(demonstrators, name)
    if name in ("Recorder", "record_episode"):
        from steve1_ray.world import recorder
        return getattr(recorder, name)
    if name in ("record_episodes", "RecordConfig"):
        from steve1_ray.world import record
        return getattr(record, name)
    raise AttributeError(f"module 'steve1_ray.world' has no attribute {name!r}")
