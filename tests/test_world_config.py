"""WorldConfig: the one description of a world, nested as `world:` in every job that plays or records."""
from __future__ import annotations

import pytest

from steve1_ray.config import ConfigError, load_config
from steve1_ray.world import WorldConfig, make_env


def test_defaults_are_the_recordings_world_and_build_a_crafter_env():
    cfg = WorldConfig()
    assert (cfg.backend, cfg.zombie_rate, cfg.tree_logs) == ("crafter", 0.2, 1)
    env = WorldConfig(frame_width=128, frame_height=72, area=[32, 32], tree_logs=3).make(max_steps=5)
    obs = env.reset(seed=1)
    assert obs["pov"].shape == (72, 128, 3) and env.max_steps == 5
    assert env._core.tree_logs == 3 and env._core.zombie_rate == 0.2
    assert env.move_over_attack is False and WorldConfig(move_over_attack=True).make().move_over_attack is True
    env.close()


@pytest.mark.parametrize("override, message", [
    ("world.backend=doom", "world.backend='doom': choose one of ['crafter', 'minerl']"),
    ("world.tree_logs=0", "world.tree_logs=0 must be an integer"),
    ("world.zombie_rate=11", "world.zombie_rate=11.0 must be in [0, 10]"),
    ("world.tile_px=2", "world.tile_px=2 must be at least 4"),
    ("world.area=[8, 8]", "world.area=[8, 8] must be [width, height]"),
    ("world.minerl={resolution: [64, 64]}", "set backend=minerl"),
    ("world.zombie_rat=0.1", "unknown key(s) ['zombie_rat']"),
    ("world.move_over_attack=maybe", "world.move_over_attack: expected true/false, got 'maybe'"),
    ("world.move_over_attack=2", "world.move_over_attack: expected true/false, got 2"),
])
def test_every_job_gets_the_same_checks(override, message):
    """A typo or a bad value fails when the config is built, in every job that nests the world."""
    from steve1_ray.evaluate.run import EvalConfig
    from steve1_ray.quickstart import QuickstartConfig
    from steve1_ray.serving.config import ServeConfig
    from steve1_ray.world.record import RecordConfig

    for cls in (RecordConfig, EvalConfig, ServeConfig, QuickstartConfig):
        with pytest.raises(ConfigError) as err:
            load_config(cls, [], [override])
        assert message in str(err.value), (cls.__name__, str(err.value))


def test_a_whole_world_on_the_command_line():
    """What the quick start passes to every stage: `world={...}` (JSON or YAML flow) as one override."""
    from steve1_ray.quickstart import world_override
    from steve1_ray.world.record import RecordConfig

    world = WorldConfig(tree_logs=4, zombie_rate=0.5)
    assert load_config(RecordConfig, [], [world_override(world)]).world == world
    assert load_config(RecordConfig, [], ["world={tree_logs: 3}"]).world == WorldConfig(tree_logs=3)
    with pytest.raises(ConfigError, match="expected a mapping for WorldConfig"):
        load_config(RecordConfig, [], ["world=4"])


def test_jobs_that_need_the_demonstrators_refuse_minerl():
    from steve1_ray.quickstart import QuickstartConfig
    from steve1_ray.world.record import RecordConfig

    for cls in (RecordConfig, QuickstartConfig):
        with pytest.raises(ConfigError, match="crafter"):
            load_config(cls, [], ["world.backend=minerl"])
    from steve1_ray.evaluate.run import EvalConfig

    assert load_config(EvalConfig, [], ["world.backend=minerl"]).world.env_kwargs() == {}


def test_make_env_names_the_backends():
    with pytest.raises(ValueError, match="unknown world backend 'doom'"):
        make_env("doom")
