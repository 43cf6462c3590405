"""Scripted demonstrators for the embedded world: play with purpose, switch goals, caption each segment.

Contractors play Minecraft by pursuing one small goal after another (chop a tree, make a table, find
water...). A `Demonstrator` does the same in crafter: it picks a feasible goal weighted by its needs and
its inventory (thirsty -> drink, no pickaxe -> make one), walks there on the shortest free path (BFS over
the tile map, never into lava), faces the target and acts through the MineRL action dict, until the goal's
achievement counter rises or the goal times out. Then it picks the next goal. Noise (random moves, camera
glances, hesitation) keeps recordings from looking like replays of one script.

Every goal segment carries a caption drawn from a few paraphrases (`GOALS[name].captions`): the text the
video-text embedder and the prior are trained on. Goals map to crafter achievements one to one (explore
has none). The demonstrator reads the live crafter state (privileged information), so it only drives the
crafter backend. Every action it emits is non-null (a key, a button or a camera move), so the contractor
ingestion keeps every frame; its first action never holds attack (the ingestion's attack-stuck
workaround would otherwise erase it).
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from crafter import constants, objects

from steve1_ray.world.crafter_env import SLOT_OF, WORLD_VIEW, CrafterEnv


@dataclass(frozen=True)
class Goal:
    name: str
    achievement: str | None  # the crafter achievement that marks success (None: explore)
    captions: tuple[str, ...]  # natural-language prompts for this behaviour


GOALS: dict[str, Goal] = {g.name: g for g in (
    Goal("collect_wood", "collect_wood", ("chop a tree", "collect wood", "get some wood", "punch a tree",
                                          "gather wood from trees")),
    Goal("collect_sapling", "collect_sapling", ("collect a sapling", "gather saplings from the grass",
                                                "look for a sapling")),
    Goal("place_plant", "place_plant", ("plant a sapling", "place a sapling on the grass", "plant a tree")),
    Goal("place_table", "place_table", ("place a crafting table", "build a crafting table",
                                        "put down a workbench")),
    Goal("make_wood_pickaxe", "make_wood_pickaxe", ("make a wooden pickaxe", "craft a wood pickaxe",
                                                    "craft a pickaxe")),
    Goal("make_wood_sword", "make_wood_sword", ("make a wooden sword", "craft a wood sword")),
    Goal("collect_stone", "collect_stone", ("mine stone", "collect stone", "dig some stone",
                                            "mine cobblestone")),
    Goal("place_stone", "place_stone", ("place a stone block", "put down stone", "build with stone")),
    Goal("make_stone_pickaxe", "make_stone_pickaxe", ("make a stone pickaxe", "craft a stone pickaxe")),
    Goal("make_stone_sword", "make_stone_sword", ("make a stone sword", "craft a stone sword")),
    Goal("place_furnace", "place_furnace", ("build a furnace", "place a furnace")),
    Goal("collect_coal", "collect_coal", ("mine coal", "collect coal", "dig for coal")),
    Goal("collect_drink", "collect_drink", ("drink water", "go drink from the lake", "get a drink of water")),
    Goal("eat_cow", "eat_cow", ("eat a cow", "hunt a cow", "kill a cow for food")),
    Goal("defeat_zombie", "defeat_zombie", ("fight the zombie", "kill the zombie", "defeat a zombie")),
    Goal("flee", None, ("run away from the zombie", "escape from the zombie", "get away from the zombie")),
    Goal("sleep", "wake_up", ("go to sleep", "sleep through the night", "take a nap")),
    Goal("explore", None, ("explore", "walk around and explore", "look around the area")),
)}


@dataclass
class Segment:
    """Frames [start, end) of an episode spent on one goal."""
    start: int
    end: int
    goal: str
    achievement: str | None
    text: str
    success: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DIRS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MOVE_KEY = {"left": "left", "right": "right", "up": "forward", "down": "back"}
_DIR_OF = {v: k for k, v in DIRS.items()}
COLLECT_MORE = ("collect_wood", "collect_stone", "collect_coal", "collect_drink", "collect_sapling", "eat_cow",
                "defeat_zombie")  # goals that simply continue while a segment is kept up
# what a task goal needs first when it is not feasible yet (see Demonstrator(focus=...))
FOCUS_NEEDS = {"place_plant": "collect_sapling", "place_table": "collect_wood", "make_wood_pickaxe": "place_table",
               "make_wood_sword": "place_table", "collect_stone": "make_wood_pickaxe", "collect_coal": "make_wood_pickaxe",
               "place_stone": "collect_stone", "make_stone_pickaxe": "collect_stone",
               "make_stone_sword": "collect_stone", "place_furnace": "collect_stone"}
# How readily free play (and a task, for goals other than its own) drinks, hunts and chops: below these
# inventory levels the goal weighs 3-4, above them `sated` (Demonstrator(appetite=...)).
APPETITES = {
    "eager": {"drink_below": 6, "food_below": 6, "wood_below": 4,
              "sated": {"collect_drink": 0.5, "eat_cow": 0.7, "collect_wood": 1.0}},
    "needs": {"drink_below": 5, "food_below": 5, "wood_below": 2,
              "sated": {"collect_drink": 0.1, "eat_cow": 0.1, "collect_wood": 0.2}},
}
# the inventory item (or need) a gathering goal fills; crafter caps each at 9 (Demonstrator(stop_at_full=...))
FILLS = {"collect_drink": "drink", "eat_cow": "food", "collect_wood": "wood", "collect_sapling": "sapling",
         "collect_stone": "stone", "collect_coal": "coal"}
URGENT = 6.0  # goal weight from which a need (a zombie near, thirst, hunger, exhaustion) overrides a task
GLANCE_DEG = (-9.0, -6.0, -3.0, 3.0, 6.0, 9.0)  # camera glances: multiples of 3 degrees (20 mouse counts)


@dataclass
class _Active:
    goal: Goal
    start: int
    text: str
    baseline: int
    target: int
    deadline: int
    explore_dir: str = "up"
    done: bool = False
    extra: dict = field(default_factory=dict)


class Demonstrator:
    """A goal-driven scripted player for one `CrafterEnv` episode.

        demo = Demonstrator(env, seed=3)
        obs = env.reset(seed=3); demo.reset()
        while not done:
            action = demo.act()
            obs, reward, done, info = env.step(action)
        segments = demo.finish()

    Args:
        noise:     per-step probability of a random action (safe move, glance, stray key).
        goal_steps: step budget of one goal before it is abandoned.
        radius:    how far (tiles) the demonstrator looks for targets.
        goals:     restrict the goals it may pick (names of `GOALS`); default all.
        min_segment: a goal reached sooner is kept up (more of the same, or walking on) until its
                   segment has this many frames (16 = one MineCLIP window).
        sight:     False: the player knows the map within `radius` (privileged: it walks to trees and water
                   the view does not show yet). True: only what the frame shows (crafter's local view,
                   tiles x-8..x+7, y-4..y+3): anything else it has to find by exploring, so where it
                   walks follows from what a policy sees.
        focus:     a goal this player prefers for the whole episode (a *task*, as the VPT contractors of the
                   10.x sets were given one): whenever it is feasible its weight is `focus_boost` times the
                   usual one, and when it is not the player explores more to find what it needs. Needs
                   (drink, food, sleep, zombies) still come first. None: free play.
        appetite:  "eager": it drinks, hunts and chops whenever water, a cow or a tree is near and it has room
                   (drink or food < 6, wood < 4 weigh most). "needs": it does so mostly when its needs call
                   for it (drink or food < 5, wood < 2: what the next table or tool takes), as a player who is
                   not asked to; a task goal is still pursued with the same zeal. "needs" sharpens the contrast
                   between a task and free play that a prompt has to carry (docs/world.md).
        stop_at_full: True: a gathering goal (drink, cow, wood, sapling, stone, coal) that is not the
                   episode's task is reached as soon as what it fills is full (9), as a player not asked to
                   drink or chop has had enough: it walks on (its segment kept up to `min_segment` frames, a
                   success) instead of gathering more; the task's own goal goes on to its count and keeps its
                   segment up by gathering. False: every gathering goal takes its count (1-5) and keeps its
                   segment up by gathering at full too: then half the free play's drinks and a third of its
                   logs come at full, and the frames that show water (a tree) in front mostly come with `do`
                   whatever the player needs (docs/world.md).
    """

    def __init__(self, env: CrafterEnv, seed: int = 0, noise: float = 0.05, goal_steps: int = 150,
                 radius: int = 12, goals: tuple[str, ...] | list[str] | None = None, min_segment: int = 16,
                 focus: str | None = None, focus_boost: float = 8.0, sight: bool = False,
                 appetite: str = "eager", stop_at_full: bool = False):
        if not isinstance(env, CrafterEnv):
            raise TypeError("Demonstrator drives the crafter backend (it reads crafter's tile map); "
                            f"got {type(env).__name__}")
        unknown = sorted(set(goals or ()) - set(GOALS))
        if unknown:
            raise ValueError(f"unknown goal(s) {unknown}; known goals: {sorted(GOALS)}")
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise={noise} must be a probability in [0, 1]")
        if focus is not None and focus not in GOALS:
            raise ValueError(f"unknown focus goal {focus!r}; known goals: {sorted(GOALS)}")
        if focus_boost < 1.0:
            raise ValueError(f"focus_boost={focus_boost} must be >= 1")
        if appetite not in APPETITES:
            raise ValueError(f"appetite={appetite!r}: use one of {list(APPETITES)}")
        self.focus, self.focus_boost = focus, float(focus_boost)
        # the task's own goal keeps the eager appetite; the rest follow `appetite`
        self._appetite = {goal: APPETITES["eager" if goal == focus else appetite]
                          for goal in ("collect_wood", "collect_drink", "eat_cow")}
        self.sight = bool(sight)
        self.stop_at_full = bool(stop_at_full)
        self.env = env
        self.rng = np.random.default_rng(seed)
        self.noise = float(noise)
        self.goal_steps = int(goal_steps)
        self.min_segment = int(min_segment)
        self.radius = int(radius)
        self.allowed = tuple(goals) if goals else tuple(GOALS)
        self.segments: list[Segment] = []
        self._active: _Active | None = None
        self._t = 0
        self._warmup = 0

    # ------------------------------------------------------------------ episode API
    def reset(self) -> None:
        """Call after env.reset(seed)."""
        self.segments, self._active, self._t = [], None, 0
        self._warmup = int(self.rng.integers(1, 4))  # look around first (never attack on frame 0)

    def act(self) -> dict[str, Any]:
        """The action for the current state (a partial MineRL action dict, never null)."""
        t = self._t
        self._t += 1
        self._update_goal(t)
        if t < self._warmup:
            return self._glance()
        if self.rng.random() < self.noise:
            return self._noise_action()
        a = self._active
        if a.extra.get("linger") and (a.goal.name not in COLLECT_MORE or self._full(a.goal.name)):
            # walk on, not stand looking around: idle frames kept up after a placing or crafting goal made
            # half of those goals' segments idle, and a policy learned "place a table" as "stand still"
            action = self._explore_step()
        else:
            action = self._goal_action(a)
        if not action:
            action = self._glance()
        return action

    def finish(self) -> list[Segment]:
        """Close the open segment; returns all segments (frames [start, end) cover the episode)."""
        if self._active is not None:
            self._close(self._t, self._reached(self._active))
        return self.segments

    # ------------------------------------------------------------------ goals
    @property
    def current_goal(self) -> str | None:
        return self._active.goal.name if self._active else None

    def _count(self, goal: Goal) -> int:
        return int(self.env.player.achievements.get(goal.achievement, 0)) if goal.achievement else 0

    def _achieved(self, a: _Active) -> bool:
        return a.goal.achievement is not None and self._count(a.goal) - a.baseline >= a.target

    def _full(self, name: str) -> bool:
        """With `stop_at_full`: a gathering goal other than the task's whose item (need) is full (9)."""
        fills = FILLS.get(name)
        return bool(self.stop_at_full and fills and name != self.focus and self.env.player.inventory[fills] >= 9)

    def _reached(self, a: _Active) -> bool:
        """Its target count, or (`stop_at_full`) full after gathering some: had enough, so done as well."""
        return self._achieved(a) or (self._full(a.goal.name) and self._count(a.goal) > a.baseline)

    def _close(self, t: int, success: bool) -> None:
        a = self._active
        if t > a.start:
            self.segments.append(Segment(a.start, t, a.goal.name, a.goal.achievement, a.text, bool(success)))
        self._active = None

    def _update_goal(self, t: int) -> None:
        a = self._active
        if a is not None:
            react = None
            if a.goal.name not in ("defeat_zombie", "flee") and self._nearest_object(objects.Zombie, 2):
                react = "defeat_zombie" if self.env.player.health >= 3 else "flee"
                react = react if react in self.allowed else None
            elif a.goal.name == "defeat_zombie" and self.env.player.health < 3 and "flee" in self.allowed:
                react = "flee"
            elif a.goal.name == "flee" and not self._nearest_object(objects.Zombie, 6):
                a.done = True
            inv = self.env.player.inventory
            thirsty, hungry = inv["drink"] <= 3, inv["food"] <= 3
            if a.goal.name not in ("collect_drink", "eat_cow", "defeat_zombie", "flee", "explore") and (
                    thirsty or hungry):  # a pressing need ends whatever else it was doing
                a.done = True
            if self._full(a.goal.name) and self._count(a.goal) == a.baseline:
                a.done = True  # full before it gathered anything (it is not offered full: a fallback start)
            # a goal reached early is kept up a little (more of the same, or walking on) so that each
            # captioned segment spans at least `min_segment` frames, one MineCLIP window
            reached = self._reached(a)
            short = reached and t - a.start < self.min_segment
            a.extra["linger"] = short
            if (reached and not short) or t >= a.deadline or a.done or react:
                self._close(t, reached)
                if react:
                    self._start(react, t)
        if self._active is None:
            self._start(self._choose(), t)

    def _start(self, name: str, t: int) -> None:
        goal = GOALS[name]
        target = 1
        if name in ("collect_wood", "collect_stone", "collect_drink", "collect_coal"):
            target = int(self.rng.integers(2, 6))
        budget = self.goal_steps if name != "explore" else int(self.rng.integers(15, 50))
        if name == "flee":
            budget = 40
        if name == "sleep":
            budget = 2 * self.goal_steps
        self._active = _Active(goal, t, str(self.rng.choice(goal.captions)), self._count(goal), target, t + budget,
                               explore_dir=str(self.rng.choice(list(DIRS))))

    def _choose(self) -> str:
        weights = {name: w for name, w in self._weights().items() if name in self.allowed and w > 0}
        if self.focus is not None and weights:
            urgent = max(weights.values()) >= URGENT  # needs first
            step = self.focus
            while step not in weights and step in FOCUS_NEEDS:  # not feasible yet: work towards it
                step = FOCUS_NEEDS[step]
            if step in weights and not urgent:
                weights[step] *= self.focus_boost
            elif not urgent and "explore" in weights:
                weights["explore"] *= self.focus_boost / 2  # look for what the task needs
        if not weights:
            return "explore" if "explore" in self.allowed else next(
                (g for g in self.allowed if not self._full(g)), self.allowed[0])
        names = list(weights)
        p = np.array([weights[n] for n in names], np.float64)
        return str(names[self.rng.choice(len(names), p=p / p.sum())])

    def _weights(self) -> dict[str, float]:
        inv = self.env.player.inventory
        near = self._near_materials()
        has_table = "table" in near

        def room(item: str, goal: str) -> bool:  # inventories stop at 9, except for the episode's task
            return inv[item] < 9 or self.focus == goal

        w: dict[str, float] = {"explore": 0.6}
        if self._nearest_object(objects.Zombie, 4):
            w["defeat_zombie" if self.env.player.health >= 3 else "flee"] = URGENT
        a = self._appetite["collect_wood"]
        if "tree" in near and room("wood", "collect_wood"):
            w["collect_wood"] = 3.0 if inv["wood"] < a["wood_below"] else a["sated"]["collect_wood"]
        if "grass" in near and room("sapling", "collect_sapling"):
            w["collect_sapling"] = 0.6
        if inv["sapling"] >= 1:
            w["place_plant"] = 1.2
        if inv["wood"] >= 2 and (not has_table or self.focus == "place_table"):
            w["place_table"] = 3.0
        if has_table and inv["wood"] >= 1:
            w["make_wood_pickaxe"] = 3.0 if inv["wood_pickaxe"] == 0 else 0.3
            w["make_wood_sword"] = 2.0 if inv["wood_sword"] == 0 else 0.2
        if inv["wood_pickaxe"] and "stone" in near and room("stone", "collect_stone"):
            w["collect_stone"] = 2.5
        if inv["wood_pickaxe"] and "coal" in near and inv["coal"] < 9:
            w["collect_coal"] = 1.5
        if inv["stone"] >= 1:
            w["place_stone"] = 0.8
        if has_table and inv["wood"] >= 1 and inv["stone"] >= 1:
            w["make_stone_pickaxe"] = 2.5 if inv["stone_pickaxe"] == 0 else 0.2
            w["make_stone_sword"] = 1.0 if inv["stone_sword"] == 0 else 0.2
        if inv["stone"] >= 4 and has_table and "furnace" not in near:
            w["place_furnace"] = 1.5
        if "water" in near and room("drink", "collect_drink"):
            a = self._appetite["collect_drink"]
            w["collect_drink"] = 4.0 if inv["drink"] < a["drink_below"] else a["sated"]["collect_drink"]
        if self._nearest_object(objects.Cow, self._search_radius()) and room("food", "eat_cow"):
            a = self._appetite["eat_cow"]
            w["eat_cow"] = 4.0 if inv["food"] < a["food_below"] else a["sated"]["eat_cow"]
        safe = self.env.player.health >= 5 and not self._nearest_object(objects.Zombie, 8)
        if inv["energy"] < 7 and safe:  # sleeping players take 7 damage per zombie hit: only when none is near
            w["sleep"] = 3.0 if inv["energy"] < 4 else 1.0
        # urgent needs first: a thirsty or hungry player drinks or hunts, or looks for water or cows
        if inv["drink"] <= 4:
            w["collect_drink" if "collect_drink" in w else "explore"] = 20.0
        if inv["food"] <= 4:
            w["eat_cow" if "eat_cow" in w else "explore"] = max(w.get("explore", 0), 15.0)
        if inv["energy"] <= 2 and safe:
            w["sleep"] = 15.0
        return w

    # ------------------------------------------------------------------ world queries
    def _search_radius(self) -> int:
        inv = self.env.player.inventory  # thirsty or hungry: look twice as far for water and cows
        return 2 * self.radius if inv["drink"] <= 4 or inv["food"] <= 4 else self.radius

    def _window(self):
        px, py = (int(v) for v in self.env.player.pos)
        area = self.env.world.area
        if self.sight:  # the tiles the frame shows (crafter's LocalView: offset = grid // 2)
            (vx, vy), (ox, oy) = WORLD_VIEW, (WORLD_VIEW[0] // 2, WORLD_VIEW[1] // 2)
            return (px, py, max(0, px - ox), min(area[0], px - ox + vx),
                    max(0, py - oy), min(area[1], py - oy + vy))
        r = self._search_radius()
        x0, x1 = max(0, px - r), min(area[0], px + r + 1)
        y0, y1 = max(0, py - r), min(area[1], py + r + 1)
        return px, py, x0, x1, y0, y1

    def _near_materials(self) -> set[str]:
        _, _, x0, x1, y0, y1 = self._window()
        world = self.env.world
        ids = np.unique(world._mat_map[x0:x1, y0:y1])
        return {world._mat_names[int(i)] for i in ids}

    def _nearest_object(self, cls, radius: int):
        pos = self.env.player.pos
        best, best_d = None, radius + 1
        view = self._window()[2:] if self.sight else None  # (x0, x1, y0, y1) of what the frame shows
        for obj in self.env.world.objects:
            if view is not None and not (view[0] <= obj.pos[0] < view[1] and view[2] <= obj.pos[1] < view[3]):
                continue  # out of view: unknown
            if isinstance(obj, cls):
                d = int(np.abs(obj.pos - pos).sum())
                if d < best_d:
                    best, best_d = obj, d
        return best

    def _facing_tile(self):
        return self.env.faced

    def _safe(self, direction: str) -> bool:
        p = self.env.player
        dx, dy = DIRS[direction]
        material, _ = self.env.world[(int(p.pos[0] + dx), int(p.pos[1] + dy))]
        return material is not None and material != "lava"

    # ------------------------------------------------------------------ planning
    def _path_step(self, target_mask: np.ndarray, reach: str = "adjacent") -> str | None | bool:
        """BFS over free walkable tiles in the window to a tile next to `target_mask` (window coords).

        Returns the first move, None when already there, False when unreachable. `reach`: "adjacent"
        (4-neighbour, to face it) or "near" (within the 3x3 block, for crafting next to a table).
        """
        px, py, x0, x1, y0, y1 = self._window()
        world = self.env.world
        mat = world._mat_map[x0:x1, y0:y1]
        walk_ids = [world._mat_ids[m] for m in constants.walkable if m in world._mat_ids]
        free = np.isin(mat, walk_ids) & (world._obj_map[x0:x1, y0:y1] == 0)
        sx, sy = px - x0, py - y0
        free[sx, sy] = True
        goal = np.zeros_like(target_mask)
        shifts = [(-1, 0), (1, 0), (0, -1), (0, 1)]
        if reach == "near":
            shifts += [(-1, -1), (-1, 1), (1, -1), (1, 1), (0, 0)]
        w, h = target_mask.shape
        for dx, dy in shifts:  # goal[x, y] |= target[x + dx, y + dy]
            xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
            goal[xs, ys] |= target_mask[xd, yd]
        goal &= free
        if goal[sx, sy]:
            return None
        # Keep walking to the goal tile chosen earlier while it is still one: equally near goals in
        # opposite directions would otherwise make the player dither between them.
        a = self._active
        target = a.extra.get("target") if a else None
        if target is not None:
            tx, ty = target[0] - x0, target[1] - y0
            if 0 <= tx < w and 0 <= ty < h and goal[tx, ty]:
                only = np.zeros_like(goal)
                only[tx, ty] = True
                step = self._bfs(free, only, sx, sy, x0, y0)
                if step is not False:
                    return step
        return self._bfs(free, goal, sx, sy, x0, y0)

    def _bfs(self, free: np.ndarray, goal: np.ndarray, sx: int, sy: int, x0: int, y0: int) -> str | bool:
        w, h = free.shape
        parent = {(sx, sy): None}
        queue = deque([(sx, sy)])
        order = list(DIRS.items())
        self.rng.shuffle(order)  # break ties differently each time: paths vary like a person's
        while queue:
            cx, cy = queue.popleft()
            for name, (dx, dy) in order:
                nx, ny = cx + dx, cy + dy
                if 0 <= nx < w and 0 <= ny < h and free[nx, ny] and (nx, ny) not in parent:
                    parent[(nx, ny)] = (cx, cy)
                    if goal[nx, ny]:
                        if self._active is not None:
                            self._active.extra["target"] = (nx + x0, ny + y0)
                        node = (nx, ny)
                        while parent[node] != (sx, sy):
                            node = parent[node]
                        return _DIR_OF[(node[0] - sx, node[1] - sy)]
                    queue.append((nx, ny))
        return False

    def _material_mask(self, names) -> np.ndarray:
        _, _, x0, x1, y0, y1 = self._window()
        world = self.env.world
        ids = [world._mat_ids[m] for m in names if m in world._mat_ids]
        return np.isin(world._mat_map[x0:x1, y0:y1], ids)

    def _object_mask(self, cls) -> np.ndarray:
        _, _, x0, x1, y0, y1 = self._window()
        mask = np.zeros((x1 - x0, y1 - y0), bool)
        for obj in self.env.world.objects:
            x, y = int(obj.pos[0]), int(obj.pos[1])
            if isinstance(obj, cls) and x0 <= x < x1 and y0 <= y < y1:
                mask[x - x0, y - y0] = True
        return mask

    def _approach_and(self, mask: np.ndarray, final: dict, is_target) -> dict:
        """Walk next to a target tile, turn to it, then do `final` (e.g. attack). In a world with
        `move_over_attack` the turn to what it will attack holds attack, as a Minecraft player aims with the
        button held; the hit lands on the next step."""
        tile, (material, obj) = self._facing_tile()
        if is_target(material, obj):
            return dict(final)
        step = self._path_step(mask)
        if step is False:
            return self._explore_step()
        if step is None:  # adjacent: turn toward the target (the move is blocked, so it only turns)
            p = self.env.player
            for name, (dx, dy) in DIRS.items():
                m, o = self.env.world[(int(p.pos[0] + dx), int(p.pos[1] + dy))]
                if is_target(m, o):
                    if self.env.move_over_attack and final.get("attack"):  # aim with the button held
                        return {MOVE_KEY[name]: 1, "attack": 1}
                    return {MOVE_KEY[name]: 1}
            return self._explore_step()
        return {MOVE_KEY[step]: 1}

    # ------------------------------------------------------------------ behaviours
    def _goal_action(self, a: _Active) -> dict:
        name = a.goal.name
        attack = {"attack": 1}
        if name in ("collect_wood", "collect_stone", "collect_coal", "collect_drink"):
            material = {"collect_wood": "tree", "collect_stone": "stone", "collect_coal": "coal",
                        "collect_drink": "water"}[name]
            return self._approach_and(self._material_mask([material]), attack,
                                      lambda m, o: m == material and o is None)
        if name == "collect_sapling":
            _, (material, obj) = self._facing_tile()
            if material == "grass" and obj is None:
                return attack
            return self._explore_step()
        if name in ("eat_cow", "defeat_zombie"):
            cls = objects.Cow if name == "eat_cow" else objects.Zombie
            if self._nearest_object(cls, self._search_radius()) is None:
                a.done = True
                return self._glance()
            return self._approach_and(self._object_mask(cls), attack, lambda m, o: isinstance(o, cls))
        if name.startswith("place_"):
            what = name[len("place_"):]
            info = constants.place[what]
            if any(self.env.player.inventory[k] < v for k, v in info["uses"].items()):
                a.done = True
                return self._glance()
            _, (material, obj) = self._facing_tile()
            if material in info["where"] and obj is None:
                return self._use_slot(name, "use")
            return self._explore_step()
        if name.startswith("make_"):
            what = name[len("make_"):]
            info = constants.make[what]
            if any(self.env.player.inventory[k] < v for k, v in info["uses"].items()):
                a.done = True
                return self._glance()
            step = self._path_step(self._material_mask(info["nearby"][:1]), reach="near")
            if step is None:
                near, _ = self.env.world.nearby(self.env.player.pos, 1)
                if all(n in near for n in info["nearby"]):
                    return self._use_slot(name, "inventory")
                a.done = True
                return self._glance()
            if step is False:
                a.done = True
                return self._glance()
            return {MOVE_KEY[step]: 1}
        if name == "sleep":
            return {"sneak": 1}
        if name == "flee":
            return self._flee_step()
        return self._explore_step()  # explore

    def _flee_step(self) -> dict:
        zombie = self._nearest_object(objects.Zombie, 8)
        if zombie is None:
            return self._explore_step()
        _, (_, obj) = self._facing_tile()
        if isinstance(obj, objects.Zombie):  # cornered: hit back
            return {"attack": 1}
        p = self.env.player
        best, best_d = None, -1
        for name, (dx, dy) in DIRS.items():
            if self._safe(name) and not self._blocked(name):
                d = abs(int(p.pos[0]) + dx - int(zombie.pos[0])) + abs(int(p.pos[1]) + dy - int(zombie.pos[1]))
                if d > best_d:
                    best, best_d = name, d
        return {MOVE_KEY[best]: 1} if best else {"attack": 1}

    def _use_slot(self, crafter_name: str, button: str) -> dict:
        slot = SLOT_OF[crafter_name]
        if self.env.hotbar != slot:  # select the slot first, like pressing a number key
            return {f"hotbar.{slot + 1}": 1}
        return {button: 1}

    def _explore_step(self) -> dict:
        a = self._active
        direction = a.explore_dir if a else "up"
        if not self._safe(direction) or self._blocked(direction) or self.rng.random() < 0.08:
            options = [d for d in DIRS if self._safe(d) and not self._blocked(d)]
            if not options:
                return self._glance()
            direction = str(self.rng.choice(options))
            if a:
                a.explore_dir = direction
        action = {MOVE_KEY[direction]: 1}
        if self.rng.random() < 0.1:
            action["camera"] = [0.0, float(self.rng.choice(GLANCE_DEG))]
        return action

    def _blocked(self, direction: str) -> bool:
        p = self.env.player
        dx, dy = DIRS[direction]
        return not p.is_free((int(p.pos[0] + dx), int(p.pos[1] + dy)))

    def _glance(self) -> dict:
        pitch = float(self.rng.choice((0.0, 0.0, -3.0, 3.0)))
        return {"camera": [pitch, float(self.rng.choice(GLANCE_DEG))]}

    def _noise_action(self) -> dict:
        r = self.rng.random()
        if r < 0.5:
            options = [d for d in DIRS if self._safe(d)]
            return {MOVE_KEY[str(self.rng.choice(options))]: 1} if options else self._glance()
        if r < 0.85:
            return self._glance()
        return {str(self.rng.choice(["jump", "sprint"])): 1, "camera": [0.0, float(self.rng.choice(GLANCE_DEG))]}
