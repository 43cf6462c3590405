"""`WorldConfig`, the one description of a world, and `make_env`, the one way to build it.

Every job that plays or records nests it as `world:` (record, evaluate, serve, quickstart), so a world is
written the same way everywhere and checked once, when the config is built:

    world: {backend: crafter, zombie_rate: 0.2, tree_logs: 4}      # in a YAML config
    steve1 evaluate world.tree_logs=4                               # on the command line
    env = cfg.world.make()                                          # a WorldEnv (steve1_ray.world.env)

The defaults are the world the scripted demonstrators record in (docs/world.md): crafter at MineRL's 640x360,
zombies at 0.2 of crafter's rate (at crafter's own rate of 1 the player dies at the first night, ~200 steps),
one log per tree as crafter publishes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steve1_ray.config import check
from steve1_ray.world.env import (FRAME_SHAPE, WorldEnv, cow_herds_problem, cow_move_problem, log_hits_problem,
                                  tree_logs_problem)

BACKENDS = ("crafter", "minerl")


@dataclass
class WorldConfig:
    """The world to play or record in: its backend and that backend's options."""

    backend: str = "crafter"
    """crafter (the embedded world, always installed) or minerl (Minecraft through MineRL 1.0, optional)"""
    zombie_rate: float = 0.2
    """crafter: night-time zombie spawning x this (1 = crafter as published; 0.2 = the recordings' world)"""
    tree_logs: int = 1
    """crafter: logs a tree yields before it turns to grass (1 = crafter as published; a Minecraft tree has
    several)"""
    log_hits: int = 1
    """crafter: `do`s a tree takes for each log (1 = crafter as published; a Minecraft log breaks after about
    three seconds of attacking it by hand)"""
    cow_move: float = 0.5
    """crafter: the chance that a cow steps on a turn (0.5 = crafter as published; lower: cows that graze, as
    Minecraft's do)"""
    cow_herds: int = 1
    """crafter: cows on the grass, times crafter's (1 = crafter as published, about one per 70 grass tiles; a
    Minecraft plain has its cows in herds of a few)"""
    move_over_attack: bool = False
    """crafter: a move key held with attack moves or turns the player instead of hitting, and the scripted
    demonstrators hold attack while they turn to what they will hit, as a Minecraft player holds the button while
    aiming (false = attack wins, the adapter as first written; docs/world.md)"""
    target_outline: bool = True
    """crafter: outline the tile the player faces (Minecraft's block outline; false = crafter's own look)"""
    frame_width: int = FRAME_SHAPE[1]
    """crafter: width of obs["pov"] in pixels (MineRL's 640)"""
    frame_height: int = FRAME_SHAPE[0]
    """crafter: height of obs["pov"] in pixels (MineRL's 360)"""
    tile_px: int = 20
    """crafter: render resolution per tile before scaling to the frame size"""
    area: list[int] = field(default_factory=lambda: [64, 64])
    """crafter: the world's size in tiles (crafter's 64x64; tests use smaller, faster worlds)"""
    minerl: dict[str, Any] = field(default_factory=dict)
    """minerl: keyword arguments of MineRL's HumanSurvival (steve1_ray.world.minerl_env.ENV_KWARGS are the
    defaults), e.g. {resolution: [640, 360]}"""

    def __post_init__(self):
        check(self.backend in BACKENDS, f"world.backend={self.backend!r}: choose one of {list(BACKENDS)}")
        check(0.0 <= self.zombie_rate <= 10.0,
              f"world.zombie_rate={self.zombie_rate} must be in [0, 10] (1 = crafter's own rate)")
        problem = tree_logs_problem(self.tree_logs)
        check(problem is None, f"world.{problem}")
        problem = cow_move_problem(self.cow_move)
        check(problem is None, f"world.{problem}")
        problem = log_hits_problem(self.log_hits)
        check(problem is None, f"world.{problem}")
        problem = cow_herds_problem(self.cow_herds)
        check(problem is None, f"world.{problem}")
        check(isinstance(self.move_over_attack, bool),
              f"world.move_over_attack={self.move_over_attack!r} must be true or false")
        check(self.frame_width >= 16 and self.frame_height >= 16,
              f"world frame size {self.frame_width}x{self.frame_height} is too small (default 640x360)")
        check(self.tile_px >= 4, f"world.tile_px={self.tile_px} must be at least 4 (default 20)")
        check(len(self.area) == 2 and all(isinstance(v, int) and v >= 16 for v in self.area),
              f"world.area={self.area!r} must be [width, height] in tiles, each at least 16 (default [64, 64])")
        check(isinstance(self.minerl, dict), f"world.minerl must be a mapping of HumanSurvival options, "
                                             f"got {self.minerl!r}")
        check(self.backend == "minerl" or not self.minerl,
              f"world.minerl={self.minerl!r} is set but world.backend is {self.backend!r}; set backend=minerl")

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the backend's env class (CrafterEnv or MineRLEnv)."""
        if self.backend == "minerl":
            return dict(self.minerl)
        return {"frame_size": (self.frame_width, self.frame_height), "tile_px": self.tile_px,
                "zombie_rate": self.zombie_rate, "target_outline": self.target_outline, "tree_logs": self.tree_logs,
                "log_hits": self.log_hits, "cow_move": self.cow_move, "cow_herds": self.cow_herds,
                "move_over_attack": self.move_over_attack, "area": tuple(self.area)}

    def make(self, max_steps: int | None = None) -> WorldEnv:
        """The env; `max_steps` ends episodes there (None: the backend's own limit)."""
        kwargs = self.env_kwargs()
        if max_steps is not None:
            kwargs["max_steps"] = max_steps
        return make_env(self.backend, **kwargs)


def make_env(backend: str = "crafter", **kwargs) -> WorldEnv:
    """Build a world env. `crafter` (embedded, default) or `minerl` (MineRL 1.0 HumanSurvival)."""
    if backend == "crafter":
        from steve1_ray.world.crafter_env import CrafterEnv

        return CrafterEnv(**kwargs)
    if backend == "minerl":
        from steve1_ray.world.minerl_env import MineRLEnv

        return MineRLEnv(**kwargs)
    raise ValueError(f"unknown world backend {backend!r}; choose one of {list(BACKENDS)}")


def recorded_world(made: dict) -> dict:
    """A world as a manifest or a record wrote it (`to_dict`), every field it lacks at its default: a field newer
    than the record (e.g. `log_hits`) did not exist, so the record's world had that field's default."""
    from steve1_ray.config import to_dict

    return {**to_dict(WorldConfig()), **made}


def world_override(world: WorldConfig) -> str:
    """`world={...}`: the whole world as one command-line override, so that every stage a pipeline runs plays in
    it whatever its config files say."""
    import json

    from steve1_ray.config import to_dict

    return "world=" + json.dumps(to_dict(world), separators=(",", ":"))
