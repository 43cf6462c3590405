"""The MineRL backend against a faithful fake of MineRL 1.0's gym interface.

Real MineRL needs Java 8 and builds Minecraft; it cannot run here. The fake reproduces what our adapter
touches, as read from minerl 1.0 (`minerl/herobraine/env_specs/human_survival_specs.py`,
`human_controls.py`, `env/_multiagent.py`, `_singleagent.py`): `HumanSurvival(**kwargs).make()`;
`env.seed(int)` applies to the next `reset()` only; `reset()` -> obs dict; `step(action)` ->
(obs, reward, done, info) with the monitors `isGuiOpen` and `location_stats` in info; stepping after done
raises RuntimeError; the action space is 23 Discrete(2) buttons + `camera` Box(-180, 180, (2,), float32);
obs has `pov` (H, W, 3) uint8 RGB at `resolution` (W, H), `inventory` (item -> 0-d int array, "air" counts
empty slots), `life_stats`, `location_stats` and per-statistic dicts such as `mine_block`.
"""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from steve1_ray.world import make_env
from steve1_ray.world.env import BUTTON_KEYS
from steve1_ray.world.minerl_env import ENV_KWARGS, BackendUnavailable, from_minerl_obs, to_minerl_action

MINERL_BUTTONS = {"ESC", "attack", "back", "drop", "forward", *(f"hotbar.{i}" for i in range(1, 10)), "inventory",
                  "jump", "left", "pickItem", "right", "sneak", "sprint", "swapHands", "use"}
SPEC_KWARGS = {"resolution", "guiscale_range", "gamma_range", "fov_range", "cursor_size_range", "frameskip",
               "name", "load_filename", "max_episode_steps", "reward_threshold", "agent_count"}


class FakeMineRLEnv:
    def __init__(self, resolution, episode_len=50, **_):
        self.w, self.h = resolution
        self.episode_len = episode_len
        self._seed = None
        self.done = True
        self.actions = []

    def seed(self, seed=None, seed_spaces=True):
        assert isinstance(seed, int) or seed is None, "Seed must be an int!"
        self._seed = seed

    def _obs(self):
        pov = np.roll(self._base, int(self.yaw), axis=1)  # the view turns with the camera
        return {
            "pov": pov.copy(),
            "inventory": {"air": np.array(36 - (self.logs > 0), np.int32), "oak_log": np.array(self.logs, np.int32),
                          "dirt": np.array(0, np.int32)},
            "equipped_items": {"mainhand": {"type": "air", "damage": np.array(0), "maxDamage": np.array(0)}},
            "life_stats": {"life": np.array(20.0), "food": np.array(20), "is_alive": np.array(True)},
            "location_stats": {"xpos": np.array(10.5), "ypos": np.array(64.0), "zpos": np.array(-3.5),
                               "pitch": np.array(self.pitch), "yaw": np.array(self.yaw)},
            "mine_block": {"oak_log": np.array(self.logs), "dirt": np.array(0)},
            "craft_item": {"crafting_table": np.array(0)},
            "kill_entity": {"cow": np.array(0)},
        }

    def reset(self):
        rng = np.random.default_rng(self._seed)
        self._seed = None  # "We don't force the same seed every episode, you gotta send it yourself"
        self._base = rng.integers(0, 256, (self.h, self.w, 3), dtype=np.uint8)
        self.t, self.yaw, self.pitch, self.logs, self.gui = 0, 0.0, 0.0, 0, False
        self.done = False
        return self._obs()

    def step(self, action):
        if self.done:
            raise RuntimeError("Attempted to step an environment server with done=True")
        unknown = set(action) - MINERL_BUTTONS - {"camera"}
        assert not unknown, unknown
        for k in MINERL_BUTTONS & set(action):
            assert action[k] in (0, 1) and isinstance(action[k], (int, np.integer)), (k, action[k])
        cam = action["camera"]
        assert isinstance(cam, np.ndarray) and cam.shape == (2,) and cam.dtype == np.float32
        assert np.all(np.abs(cam) <= 180)
        self.actions.append(action)
        self.pitch, self.yaw = self.pitch + float(cam[0]), self.yaw + float(cam[1])
        self.logs += int(action.get("attack", 0))
        self.gui ^= bool(action.get("inventory", 0))
        self.t += 1
        self.done = self.t >= self.episode_len
        info = {"isGuiOpen": self.gui, "location_stats": self._obs()["location_stats"]}
        return self._obs(), 0.0, self.done, info

    def close(self):
        self.closed = True


class FakeHumanSurvival:
    instances: list = []

    def __init__(self, *args, load_filename=None, **kwargs):
        unknown = set(kwargs) - SPEC_KWARGS
        assert not unknown, f"HumanSurvival got unexpected kwargs {unknown}"
        self.kwargs = kwargs
        FakeHumanSurvival.instances.append(self)

    def make(self, fake=False, **additional_kwargs):
        self.env = FakeMineRLEnv(**self.kwargs)
        return self.env


@pytest.fixture
def fake_minerl(monkeypatch):
    FakeHumanSurvival.instances.clear()
    names = ["minerl", "minerl.herobraine", "minerl.herobraine.env_specs",
             "minerl.herobraine.env_specs.human_survival_specs"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules[names[-1]].HumanSurvival = FakeHumanSurvival
    return FakeHumanSurvival


def test_missing_minerl_names_the_extra_and_java(monkeypatch):
    monkeypatch.setitem(sys.modules, "minerl", None)  # import fails
    with pytest.raises(BackendUnavailable, match=r"\[minerl\].*Java 8.*backend=crafter"):
        make_env("minerl")


def test_action_conversion_is_complete_and_typed():
    act = to_minerl_action({"forward": np.array([1]), "camera": np.array([[2.5, -7.0]])})
    assert set(act) == MINERL_BUTTONS | {"camera"} and set(BUTTON_KEYS) == MINERL_BUTTONS
    assert act["forward"] == 1 and act["attack"] == 0 and type(act["forward"]) is int
    assert act["camera"].dtype == np.float32 and act["camera"].tolist() == [2.5, -7.0]


def test_env_through_the_fake(fake_minerl):
    env = make_env("minerl", max_steps=None)
    spec = fake_minerl.instances[-1]
    assert spec.kwargs == ENV_KWARGS  # VPT/STEVE-1 settings: 640x360, fov 70, gamma 2, gui scale 1
    obs = env.reset(seed=3)
    assert obs["pov"].shape == (360, 640, 3) and obs["pov"].dtype == np.uint8
    again = env.reset(seed=3)
    assert np.array_equal(obs["pov"], again["pov"])  # seeds reach MineRL before each reset

    obs2, reward, done, info = env.step({"attack": 1, "camera": [0.0, 15.0]})
    sent = spec.env.actions[-1]
    assert sent["attack"] == 1 and sent["camera"].tolist() == [0.0, 15.0]
    assert np.array_equal(obs2["pov"], np.roll(again["pov"], 15, axis=1))
    assert info["inventory"] == {"oak_log": 1}  # "air" (empty slots) and zero counts left out
    assert info["achievements"] == {"mine_block.oak_log": 1}
    assert info["player_pos"] == (10.5, -3.5) and info["life"] == 20.0 and info["isGuiOpen"] is False
    _, _, _, info = env.step({"inventory": 1})
    assert info["isGuiOpen"] is True and "location_stats" in info["minerl_info"]
    env.close()


def test_episode_end_and_max_steps(fake_minerl):
    env = make_env("minerl", max_steps=3)
    env.reset(seed=0)
    dones = [env.step({"forward": 1})[2] for _ in range(3)]
    assert dones == [False, False, True]
    with pytest.raises(RuntimeError, match="reset"):
        env.step({"forward": 1})
    env.reset()
    with pytest.raises(ValueError, match="unknown action key"):
        env.step({"fly": 1})


def test_bad_observation_is_reported():
    with pytest.raises(ValueError, match="pov"):
        from_minerl_obs({"inventory": {}})
    with pytest.raises(ValueError, match="uint8"):
        from_minerl_obs({"pov": np.zeros((4, 4, 3), np.float32)})


def test_rollout_code_is_backend_agnostic(fake_minerl):
    """The same loop drives both backends."""
    def rollout(env, n):
        obs = env.reset(seed=1)
        for _ in range(n):
            obs, _, done, info = env.step({"forward": 1, "camera": [0.0, 3.0]})
            assert obs["pov"].shape == (360, 640, 3) and "inventory" in info and "achievements" in info
            if done:
                break
        env.close()

    rollout(make_env("minerl"), 3)
    rollout(make_env("crafter"), 3)
