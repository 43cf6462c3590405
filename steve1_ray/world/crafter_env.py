"""The embedded world: crafter behind the MineRL interface (`steve1_ray.world.env`).

Crafter (Hafner, 2021) is a 2-D open-world survival game modelled on Minecraft: trees, stone, coal, iron,
water, cows, zombies, a crafting table, 22 achievements. It runs anywhere pip does, so recording, rollouts,
evaluation and CI run on it; real Minecraft stays available through the `minerl` backend.

Action adapter (one MineRL action dict -> one of crafter's 17 actions; also in docs/world.md):

    hotbar.1 .. hotbar.9   select slot 1..9 (kept between steps, like Minecraft; starts at slot 1;
                           several pressed: the highest number wins). Applied first, then:
    inventory  (+ slot)    slot 1 make_wood_pickaxe, 2 make_stone_pickaxe, 3 make_iron_pickaxe,
                           4 make_wood_sword, 5 make_stone_sword, 6 make_iron_sword, 7-9 noop
    use        (+ slot)    slot 1 place_stone, 2 place_table, 3 place_furnace, 4 place_plant, 5-9 noop
    attack                 do (collect / hit / drink / eat what the player faces)
    sneak                  sleep
    forward / back         move_up / move_down   (screen directions; forward+back cancel)
    left / right           move_left / move_right (left+right cancel)
    anything else          noop (camera, jump, sprint, drop, ESC, swapHands, pickItem are ignored)

    Several keys pressed: the first rule in the order inventory, use, attack, sneak, forward/back,
    left/right decides (vertical moves before horizontal ones). A move into a blocked tile only turns
    the player, which is how it faces a tree, water or a cow before `attack`.

    `move_over_attack=True` (WorldConfig `move_over_attack`): a move key held with attack moves or turns
    the player (with or without sneak) and the hit waits for a step without one, as a Minecraft player holds
    the button while aiming at a block; the demonstrators then hold attack while they turn to what they will hit.

Frames: the local view is 16x8 tiles plus one 16-slot inventory row (9 rows of tiles), rendered at
`tile_px` pixels per tile (default 20 -> 320x180) and scaled with nearest-neighbour to `frame_size`
(default 640x360, MineRL's size). A 9-cell hotbar strip at the bottom of the view shows the selected
slot. The night-time noise of crafter's renderer uses its own RNG, so frame size never changes the
world's dynamics; `reset(seed)` makes an episode reproducible.
"""
from __future__ import annotations

import hashlib
import threading
import types
from collections import OrderedDict
from typing import Any, Mapping

import cv2
import numpy as np

import crafter
from crafter import constants, engine, objects, worldgen

from steve1_ray.world.env import (COW_MOVE, FRAME_SHAPE, WorldEnv, cow_herds_problem, cow_move_problem, log_hits_problem,
                                  normalize_action, pressed_hotbar, tree_logs_problem)

CRAFTER_ACTIONS: tuple[str, ...] = tuple(constants.actions)  # the 17 actions, in crafter's index order
ACHIEVEMENTS: tuple[str, ...] = tuple(constants.achievements)  # the 22 achievements
ACTION_INDEX = {name: i for i, name in enumerate(CRAFTER_ACTIONS)}

# Hotbar slot (0-based) -> crafter action for `use` and for `inventory`.
PLACE_SLOTS: dict[int, str] = {0: "place_stone", 1: "place_table", 2: "place_furnace", 3: "place_plant"}
CRAFT_SLOTS: dict[int, str] = {0: "make_wood_pickaxe", 1: "make_stone_pickaxe", 2: "make_iron_pickaxe",
                               3: "make_wood_sword", 4: "make_stone_sword", 5: "make_iron_sword"}
SLOT_OF: dict[str, int] = {**{v: k for k, v in PLACE_SLOTS.items()}, **{v: k for k, v in CRAFT_SLOTS.items()}}

VIEW_TILES = (16, 9)  # (columns, rows) incl. the inventory row
WORLD_VIEW = (VIEW_TILES[0], VIEW_TILES[1] - 1)  # world tiles the frame shows (the last row is the inventory)


def crafter_action(action: Mapping[str, Any], hotbar: int, move_over_attack: bool = False) -> tuple[str, int]:
    """The adapter: (full MineRL action dict, selected slot 0..8) -> (crafter action name, new slot).

    `move_over_attack`: a move key held with attack moves (or turns) instead of hitting (see the module docstring).
    """
    slot = pressed_hotbar(action)
    if slot is not None:
        hotbar = slot
    if action.get("inventory", 0):
        return CRAFT_SLOTS.get(hotbar, "noop"), hotbar
    if action.get("use", 0):
        return PLACE_SLOTS.get(hotbar, "noop"), hotbar
    vertical = int(action.get("back", 0)) - int(action.get("forward", 0))
    horizontal = int(action.get("right", 0)) - int(action.get("left", 0))
    if action.get("attack", 0) and not (move_over_attack and (vertical or horizontal)):
        return "do", hotbar
    if action.get("sneak", 0) and not action.get("attack", 0):
        return "sleep", hotbar
    if vertical:
        return ("move_down" if vertical > 0 else "move_up"), hotbar
    if horizontal:
        return ("move_right" if horizontal > 0 else "move_left"), hotbar
    return "noop", hotbar


def action_for(crafter_name: str, hotbar: int = 0) -> dict[str, int]:
    """The inverse, for scripts: a minimal MineRL action (as a partial dict) that yields `crafter_name`.

    Place/craft actions press the slot's hotbar key in the same step when it is not already selected.
    """
    simple = {"noop": {}, "do": {"attack": 1}, "sleep": {"sneak": 1}, "move_up": {"forward": 1},
              "move_down": {"back": 1}, "move_left": {"left": 1}, "move_right": {"right": 1}}
    if crafter_name in simple:
        return dict(simple[crafter_name])
    if crafter_name not in SLOT_OF:
        raise ValueError(f"unknown crafter action {crafter_name!r}; known: {list(CRAFTER_ACTIONS)}")
    slot = SLOT_OF[crafter_name]
    act = {"use" if crafter_name.startswith("place_") else "inventory": 1}
    if slot != hotbar:
        act[f"hotbar.{slot + 1}"] = 1
    return act


class _LocalView(engine.LocalView):
    """crafter's local view with the night noise drawn from its own RNG (not the world's)."""

    rng = np.random.RandomState(0)
    _tint_cache: dict = {}

    def __call__(self, player, unit):
        # crafter's LocalView.__call__, with the tiles drawn in one gather from a texture atlas instead of one
        # lookup and copy per tile (two thirds of a step's time), and the creatures found in the view's slice of
        # the object map instead of a pass over all of them. The same pixels (tests/test_world_env.py).
        unit = np.array(unit)
        self._unit, self._center = unit, np.array(player.pos)
        world, (gw, gh), (uw, uh) = self._world, self._grid, unit
        x0, y0 = (int(v) for v in self._center - self._offset)
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + gw, int(self._area[0])), min(y0 + gh, int(self._area[1]))
        ids = np.full((gw, gh), -1, np.int64)  # -1: outside the world, crafter's grey
        objs = np.zeros(0, np.int64)
        if xb > xa and yb > ya:
            ids[xa - x0:xb - x0, ya - y0:yb - y0] = world._mat_map[xa:xb, ya:yb]
            objs = np.unique(world._obj_map[xa:xb, ya:yb])
        canvas = self._atlas(unit)[ids].transpose(0, 2, 1, 3, 4).reshape(gw * uw, gh * uh, 3)
        for index in objs[objs > 0]:  # list order, as crafter draws them (each on its own tile)
            obj = world._objects[index]
            texture = self._textures.get(obj.texture, unit)
            engine._draw_alpha(canvas, (obj.pos - self._center + self._offset) * unit, texture)
        canvas = self._light(canvas, world.daylight)
        if player.sleeping:
            canvas = self._sleep(canvas)
        return canvas

    def _atlas(self, unit) -> np.ndarray:
        """(materials + 1, uw, uh, 3): each material id's texture at this tile size; the last entry is grey."""
        key = (int(unit[0]), int(unit[1]), len(self._world._mat_names))
        if getattr(self, "_atlas_key", None) != key:
            names = self._world._mat_names
            tiles = [self._textures.get(names[i], unit)[..., :3] for i in range(len(names))]
            tiles.append(np.full_like(tiles[0], 127))
            self._atlas_key, self._atlas_tiles = key, np.stack(tiles)
        return self._atlas_tiles

    def _light(self, canvas, daylight):
        # crafter's day/night look (noise at night, desaturate to 40 %, tint half-way to blue, blend by
        # daylight) done with OpenCV on uint8; crafter's PIL/float64 path was the costliest part of a step.
        canvas = canvas.astype(np.uint8)
        if daylight >= 0.999:
            return canvas
        night = canvas
        if daylight < 0.5:
            amount = 2 * (0.5 - daylight)
            mask = (amount * self._vignette(canvas.shape, 0.5)).astype(np.float32)
            noise = self.rng.uniform(32, 127, canvas.shape[:2]).astype(np.uint8)
            night = cv2.blendLinear(canvas, cv2.merge([noise, noise, noise]), 1 - mask, mask)
        gray = cv2.cvtColor(night, cv2.COLOR_RGB2GRAY)
        night = cv2.addWeighted(night, 0.4, cv2.merge([gray, gray, gray]), 0.6, 0)
        key = canvas.shape
        if key not in self._tint_cache:
            self._tint_cache[key] = np.broadcast_to(np.array([0, 16, 64], np.uint8), key).copy()
        night = cv2.addWeighted(night, 0.5, self._tint_cache[key], 0.5, 0)
        return cv2.addWeighted(canvas, float(daylight), night, float(1 - daylight), 0)


def _do_material_with_logs(player, target, material):
    """crafter's `Player._do_material` on a world whose trees yield `player.tree_logs` logs, each after
    `player.log_hits` hits.

    crafter 1.8.3 turns a tree into grass at the first `do` (`collect: tree: leaves: grass`); a Minecraft tree
    gives several logs, one per block, and each block breaks only after about three seconds of attacking it by
    hand. What is left of a tree, and the hits its next log has taken, are kept per tile, so a tree chopped
    part-way keeps them. Bound on the player instance (crafter's semantic view looks objects up by their exact
    class).
    """
    if material == "tree" and player.log_hits > 1:
        key = (int(target[0]), int(target[1]))
        hits = player.hits_taken.get(key, 0) + 1
        if hits < player.log_hits:  # not yet: the tree stays, nothing is received
            player.hits_taken[key] = hits
            return
        player.hits_taken.pop(key, None)
    objects.Player._do_material(player, target, material)
    if material != "tree" or player.world[target][0] == "tree":
        return
    key = (int(target[0]), int(target[1]))
    left = player.logs_left.get(key, player.tree_logs) - 1
    if left > 0:
        player.world[target] = "tree"
        player.logs_left[key] = left
    else:
        player.logs_left.pop(key, None)


def _cow_update(cow):
    """crafter's `Cow.update` with the chance of a step per turn set by `cow.move_chance` (crafter: 0.5).

    Draws the world RNG exactly as crafter does, so at 0.5 a world plays out the same. Bound per cow, like the
    player's `_do_material` (crafter's semantic view looks objects up by their exact class)."""
    if cow.health <= 0:
        cow.world.remove(cow)
    if cow.random.uniform() < cow.move_chance:
        cow.move(cow.random_dir())


def _graze(cow, move_chance: float):
    cow.move_chance = move_chance
    cow.update = types.MethodType(_cow_update, cow)
    return cow


def add_herds(world: engine.World, player: objects.Player, herds: int, seed: int) -> int:
    """`herds - 1` times crafter's cows more on the world's grass: each free grass tile more than 3 tiles from the
    player gets one with chance (herds - 1) x 1.5 % (crafter's generation: 1.5 %). Draws from an RNG of its own
    (`seed`), so the world's RNG, and everything it decides afterwards, is not shifted by the drawing. Returns
    the number of cows added."""
    grass = world._mat_map == world._mat_ids["grass"]
    xs, ys = np.meshgrid(np.arange(grass.shape[0]), np.arange(grass.shape[1]), indexing="ij")
    px, py = (int(v) for v in player.pos)
    far = (xs - px) ** 2 + (ys - py) ** 2 > 9
    draw = np.random.RandomState(seed % 2**32).uniform(size=grass.shape)
    picked = np.argwhere(grass & (world._obj_map == 0) & far & (draw < 0.015 * (herds - 1)))
    for x, y in picked:
        world.add(objects.Cow(world, (int(x), int(y))))
    return len(picked)


# Generated worlds, by what generation reads: the area, the player's start and the world RNG's state (seeded by
# reset). crafter draws each world tile by tile with pure-Python simplex noise, about 2 s for 64x64 tiles, while
# an evaluation plays the same dozen worlds in every cell; a hit restores the world exactly as generation leaves it.
_WORLDS: OrderedDict[tuple, tuple] = OrderedDict()
_WORLDS_LOCK = threading.Lock()  # serving's rollout actors may reset worlds from several threads
WORLD_CACHE_SIZE = 32
_GENERATED = (objects.Cow, objects.Zombie, objects.Skeleton)


def _rng_key(random: np.random.RandomState) -> tuple:
    kind, keys, pos, has_gauss, gauss = random.get_state()
    return kind, hashlib.sha256(keys.tobytes()).hexdigest(), int(pos), int(has_gauss), float(gauss)


def generate_world(world: engine.World, player: objects.Player) -> bool:
    """crafter's `worldgen.generate_world`, remembered: the same area, start and RNG state give the same materials,
    creatures (in the same order) and RNG state afterwards. Returns whether the world came from the cache."""
    key = (tuple(int(v) for v in world.area), tuple(int(v) for v in player.pos), _rng_key(world.random),
           tuple(world._mat_ids))  # material ids, as the map stores them
    with _WORLDS_LOCK:
        hit = _WORLDS.get(key)
        if hit is not None:
            _WORLDS.move_to_end(key)
    if hit is None:
        worldgen.generate_world(world, player)
        made = world._objects[2:]  # [None, player, what generation added]
        if all(type(o) in _GENERATED for o in made):
            entry = (world._mat_map.copy(), [(type(o), tuple(int(v) for v in o.pos)) for o in made],
                     world.random.get_state())
            with _WORLDS_LOCK:
                _WORLDS[key] = entry
                while len(_WORLDS) > WORLD_CACHE_SIZE:
                    _WORLDS.popitem(last=False)
        return False
    materials, made, state = hit
    world._mat_map[...] = materials
    for cls, pos in made:
        world.add(cls(world, pos) if cls is objects.Cow else cls(world, pos, player))
    world.random.set_state(state)
    return True


class _Core(crafter.Env):
    """crafter.Env rendering our frame layout (one render per step)."""

    def __init__(self, area, length, tile_px, frame_size, zombie_rate=1.0, target_outline=True, tree_logs=1,
                 cow_move=COW_MOVE, log_hits=1, cow_herds=1):
        cols, rows = VIEW_TILES
        super().__init__(area=area, view=(cols, rows), size=(cols * tile_px, rows * tile_px),
                         reward=True, length=length, seed=0)
        self._local_view = _LocalView(self._world, self._textures, list(WORLD_VIEW))
        self._tile = tile_px
        self._frame_size = tuple(frame_size)  # (W, H)
        self.zombie_rate = float(zombie_rate)
        self.target_outline = bool(target_outline)
        self.tree_logs = int(tree_logs)
        self.log_hits = int(log_hits)
        self.cow_move = float(cow_move)
        self.cow_herds = int(cow_herds)
        self.hotbar = 0

    def reset(self):
        # crafter.Env.reset (1.8.3), with the world's generation remembered (`generate_world`)
        center = (self._world.area[0] // 2, self._world.area[1] // 2)
        self._episode += 1
        self._step = 0
        world_seed = hash((self._seed, self._episode)) % (2 ** 31 - 1)
        self._world.reset(seed=world_seed)
        self._update_time()
        self._player = objects.Player(self._world, center)
        self._last_health = self._player.health
        self._world.add(self._player)
        self._unlocked = set()
        generate_world(self._world, self._player)
        if self.cow_herds != 1:  # herds: more cows on the grass (add_herds), drawn apart from the world's RNG
            add_herds(self._world, self._player, self.cow_herds, world_seed + 1)
        obs = self._obs()
        if self.tree_logs != 1 or self.log_hits != 1:  # trees that take several `do`s (_do_material_with_logs)
            player = self._player
            player.tree_logs, player.logs_left = self.tree_logs, {}
            player.log_hits, player.hits_taken = self.log_hits, {}
            player._do_material = types.MethodType(_do_material_with_logs, player)
        if self.cow_move != COW_MOVE:  # cows that graze (see _cow_update); crafter's own update otherwise
            for obj in self._world.objects:
                if type(obj) is objects.Cow:
                    _graze(obj, self.cow_move)
        return obs

    def _balance_object(self, chunk, objs, cls, material, span_dist, despan_dist, spawn_prob, despawn_prob,
                        ctor, target_fn):
        # crafter's per-chunk targets, scaled: zombies by zombie_rate, cows by cow_herds (so the balance keeps herds)
        scale = {objects.Zombie: self.zombie_rate, objects.Cow: self.cow_herds}.get(cls, 1)
        if scale != 1:
            base = target_fn
            target_fn = lambda num, space: tuple(scale * v for v in base(num, space))  # noqa: E731
        if cls is objects.Cow and self.cow_move != COW_MOVE:  # cows spawned later graze too
            make, chance = ctor, self.cow_move
            ctor = lambda pos: _graze(make(pos), chance)  # noqa: E731
        super()._balance_object(chunk, objs, cls, material, span_dist, despan_dist, spawn_prob, despawn_prob,
                                ctor, target_fn)

    def _balance_chunk(self, chunk, objs):
        # crafter passes a set of objects here and picks the one to despawn by index into it, so the
        # outcome depended on memory addresses (same seed, different episode). Position order fixes it.
        super()._balance_chunk(chunk, sorted(objs, key=lambda o: (int(o.pos[0]), int(o.pos[1]))))

    def render(self, size=None):
        unit = np.array([self._tile, self._tile])
        local = self._local_view(self._player, unit)  # (W, H_local, 3) float, x-major
        if self.target_outline:
            self._draw_target(local)
        inv_key = tuple(self._player.inventory.values())
        if getattr(self, "_items_key", None) != inv_key:  # the inventory row changes rarely: reuse it
            self._items_key, self._items = inv_key, self._item_view(self._player.inventory, unit)
        items = self._items
        view = cv2.transpose(np.concatenate([local.astype(np.uint8), items], 1))  # (H, W, 3)
        self._draw_hotbar(view, local.shape[1])
        if (view.shape[1], view.shape[0]) != self._frame_size:
            view = cv2.resize(view, self._frame_size, interpolation=cv2.INTER_NEAREST)
        return view

    def _draw_target(self, local: np.ndarray) -> None:
        """Outline the tile the player faces, as Minecraft outlines the block under the crosshair.

        crafter shows which way the player faces only by its sprite (a few pixels once the policy's 128x128
        resize is done), and `do`, `use` and crafting act on that tile.
        """
        t, edge = self._tile, max(1, self._tile // 5)
        cols, rows = WORLD_VIEW
        x = cols // 2 + int(self._player.facing[0])  # the player sits at the view's grid // 2
        y = rows // 2 + int(self._player.facing[1])
        if not (0 <= x < cols and 0 <= y < rows):
            return
        tile = local[x * t:(x + 1) * t, y * t:(y + 1) * t]
        tile[:edge], tile[-edge:], tile[:, :edge], tile[:, -edge:] = 255, 255, 255, 255

    def _draw_hotbar(self, view: np.ndarray, bottom: int) -> None:
        cell = max(4, self._tile // 2)
        y0 = bottom - cell - max(1, self._tile // 10)
        x0 = (view.shape[1] - 9 * cell) // 2
        view[y0:y0 + cell, x0:x0 + 9 * cell] = 30
        for i in range(9):
            x = x0 + i * cell
            view[y0 + 1:y0 + cell - 1, x + 1:x + cell - 1] = 235 if i == self.hotbar else 110


class CrafterEnv(WorldEnv):
    """Crafter with MineRL's action dicts and 640x360 RGB frames. See the module docstring for the adapter.

    Args:
        frame_size: (W, H) of obs["pov"]; default MineRL's (640, 360).
        tile_px:    pixels per tile before scaling (20 -> a 320x180 render scaled 2x).
        max_steps:  episode length limit (crafter's default 10000); `done` also when the player dies.
        area:       world size in tiles.
        zombie_rate: multiplies crafter's night-time zombie spawning (1 = crafter as published, 0 = none
                    after the first few; the scripted demonstrators survive longer below 1).
        target_outline: outline the tile the player faces (what `do`/`use` act on), like Minecraft's block
                    outline; False = crafter's own look (recordings made before this option lack it).
        tree_logs:  logs a tree yields before it turns to grass (1 = crafter as published; a Minecraft tree
                    has several, one per block).
        cow_move:   the chance that a cow steps on a turn (0.5 = crafter as published: a step every other turn;
                    a Minecraft cow grazes, mostly standing, now and then wandering a few blocks).
        log_hits:   `do`s a tree takes for each log (1 = crafter as published; a Minecraft log breaks after
                    about three seconds of attacking it by hand).
        cow_herds:  cows on the grass, times crafter's (1 = crafter as published; see `add_herds`), at world
                    generation and in crafter's per-chunk balance of cows afterwards.
        move_over_attack: a move key held with attack moves or turns the player instead of hitting (False:
                    attack wins, the adapter as it was first written; see the module docstring).
    """

    backend = "crafter"

    def __init__(self, frame_size: tuple[int, int] = (FRAME_SHAPE[1], FRAME_SHAPE[0]), tile_px: int = 20,
                 max_steps: int = 10000, area: tuple[int, int] = (64, 64), zombie_rate: float = 1.0,
                 target_outline: bool = True, tree_logs: int = 1, cow_move: float = COW_MOVE, log_hits: int = 1,
                 cow_herds: int = 1, move_over_attack: bool = False):
        if tile_px < 4:
            raise ValueError(f"tile_px={tile_px} is too small to draw tiles; use 4 or more (default 20)")
        if len(frame_size) != 2 or min(frame_size) < 16:
            raise ValueError(f"frame_size={frame_size!r} must be (width, height), each at least 16 pixels")
        if max_steps < 1:
            raise ValueError(f"max_steps={max_steps} must be at least 1")
        if not 0.0 <= zombie_rate <= 10.0:
            raise ValueError(f"zombie_rate={zombie_rate} must be in [0, 10] (1 = crafter's own rate)")
        if problem := tree_logs_problem(tree_logs):
            raise ValueError(problem)
        if problem := cow_move_problem(cow_move):
            raise ValueError(problem)
        if problem := log_hits_problem(log_hits):
            raise ValueError(problem)
        if problem := cow_herds_problem(cow_herds):
            raise ValueError(problem)
        if not isinstance(move_over_attack, (bool, np.bool_)):
            raise ValueError(f"move_over_attack={move_over_attack!r} must be true or false")
        self.move_over_attack = bool(move_over_attack)
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.max_steps = int(max_steps)
        self._core = _Core(tuple(area), self.max_steps, int(tile_px), self.frame_size, zombie_rate, target_outline,
                           tree_logs, cow_move, log_hits, cow_herds)
        self._seed_rng = np.random.default_rng()
        self.seed: int | None = None
        self._done = True
        self._started = False
        self.last_info: dict[str, Any] = {}

    # The live crafter state, for scripted demonstrators and tests (read-only use).
    @property
    def world(self) -> engine.World:
        return self._core._world

    @property
    def player(self):
        return self._core._player

    @property
    def faced(self) -> tuple[tuple[int, int], tuple[str, Any]]:
        """((x, y), (material, object or None)) of the tile the player faces (the outlined one), where `do`,
        `use` and crafting act."""
        p = self.player
        target = (int(p.pos[0] + p.facing[0]), int(p.pos[1] + p.facing[1]))
        return target, self.world[target]

    def render_frame(self) -> np.ndarray:
        """The frame of the world as it is now, (H, W, 3) uint8 like `obs["pov"]`: after a probe changes the live
        state (e.g. which way the player faces, `steve1_ray.world.facing`) without stepping. Leaves the night's noise
        generator where it was, so two calls on the same state give the same frame and the episode's later
        frames are those it would have had without the call."""
        view = self._core._local_view
        state = view.rng.get_state()
        try:
            return self._core.render()
        finally:
            view.rng.set_state(state)

    def crafter_name(self, action: Mapping[str, Any]) -> str:
        """The crafter action `action` would take now (the adapter, without stepping)."""
        return crafter_action(normalize_action(action), self._core.hotbar, self.move_over_attack)[0]

    @property
    def hotbar(self) -> int:
        """Selected hotbar slot, 0..8."""
        return self._core.hotbar

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        if seed is None:
            seed = int(self._seed_rng.integers(0, 2**31 - 1))
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise ValueError(f"seed={seed!r} must be a non-negative integer (or None for a random one)")
        self.seed = int(seed)
        core = self._core
        core._seed, core._episode = self.seed, 0  # crafter seeds the world with hash((seed, episode))
        core._local_view.rng = np.random.RandomState(self.seed % (2**32))
        core.hotbar = 0
        pov = core.reset()
        self._done, self._started = False, True
        self.last_info = self._info("noop", 1.0)
        return {"pov": pov}

    def step(self, action: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], float, bool, dict]:
        if not self._started:
            raise RuntimeError("step() before reset(); call env.reset(seed) first")
        if self._done:
            raise RuntimeError("step() after the episode ended (done=True); call env.reset(seed)")
        act = normalize_action(action)
        name, self._core.hotbar = crafter_action(act, self._core.hotbar, self.move_over_attack)
        pov, reward, done, cinfo = self._core.step(ACTION_INDEX[name])
        self._done = bool(done)
        self.last_info = self._info(name, cinfo["discount"])
        return {"pov": pov}, float(reward), self._done, self.last_info

    def _info(self, crafter_name: str, discount: float) -> dict[str, Any]:
        player = self.player
        return {
            "inventory": dict(player.inventory),
            "achievements": dict(player.achievements),
            "crafter_action": crafter_name,
            "hotbar": self._core.hotbar,
            "player_pos": (int(player.pos[0]), int(player.pos[1])),
            "facing": (int(player.facing[0]), int(player.facing[1])),
            "sleeping": bool(player.sleeping),
            "daylight": float(self.world.daylight),
            "discount": float(discount),
            "step": int(self._core._step),
        }

    def close(self) -> None:
        self._done, self._started = True, False
