"""The world interface and the crafter backend: adapter table, frames, info, determinism, reachability."""
from __future__ import annotations

import numpy as np
import pytest

from steve1_ray.config import ConfigError
from steve1_ray.world import ActionError, WorldConfig, make_env, normalize_action
from steve1_ray.world.crafter_env import (ACHIEVEMENTS, CRAFT_SLOTS, CRAFTER_ACTIONS, PLACE_SLOTS, CrafterEnv,
                                          action_for, crafter_action)
from steve1_ray.world.env import ACTION_KEYS, is_exact_camera, is_null_action, noop_action

# The documented table (docs/world.md), row by row: (pressed keys, selected slot before) -> (crafter action, slot after)
TABLE = [
    ({}, 0, "noop", 0),
    ({"forward": 1}, 0, "move_up", 0),
    ({"back": 1}, 0, "move_down", 0),
    ({"left": 1}, 0, "move_left", 0),
    ({"right": 1}, 0, "move_right", 0),
    ({"attack": 1}, 0, "do", 0),
    ({"sneak": 1}, 0, "sleep", 0),
    ({"use": 1}, 0, "place_stone", 0),
    ({"use": 1}, 1, "place_table", 1),
    ({"use": 1}, 2, "place_furnace", 2),
    ({"use": 1}, 3, "place_plant", 3),
    ({"use": 1}, 4, "noop", 4),
    ({"inventory": 1}, 0, "make_wood_pickaxe", 0),
    ({"inventory": 1}, 1, "make_stone_pickaxe", 1),
    ({"inventory": 1}, 2, "make_iron_pickaxe", 2),
    ({"inventory": 1}, 3, "make_wood_sword", 3),
    ({"inventory": 1}, 4, "make_stone_sword", 4),
    ({"inventory": 1}, 5, "make_iron_sword", 5),
    ({"inventory": 1}, 8, "noop", 8),
    # hotbar keys select first (and persist), then the rule applies
    ({"hotbar.2": 1, "use": 1}, 0, "place_table", 1),
    ({"hotbar.4": 1}, 0, "noop", 3),
    ({"hotbar.2": 1, "hotbar.5": 1, "inventory": 1}, 0, "make_stone_sword", 4),  # highest number wins
    # priority: inventory > use > attack > sneak > forward/back > left/right
    ({"inventory": 1, "use": 1, "attack": 1}, 0, "make_wood_pickaxe", 0),
    ({"use": 1, "attack": 1, "forward": 1}, 1, "place_table", 1),
    ({"attack": 1, "forward": 1, "sneak": 1}, 0, "do", 0),
    ({"sneak": 1, "left": 1}, 0, "sleep", 0),
    ({"forward": 1, "left": 1}, 0, "move_up", 0),
    ({"forward": 1, "back": 1}, 0, "noop", 0),  # cancel, like VPT's action mapping
    ({"forward": 1, "back": 1, "right": 1}, 0, "move_right", 0),
    ({"left": 1, "right": 1}, 0, "noop", 0),
    # ignored keys and the camera
    ({"jump": 1, "sprint": 1, "drop": 1, "ESC": 1, "swapHands": 1, "pickItem": 1}, 0, "noop", 0),
    ({"camera": [10.0, -30.0]}, 0, "noop", 0),
]


@pytest.mark.parametrize("keys,slot,expected,slot_after", TABLE)
def test_adapter_table(keys, slot, expected, slot_after):
    name, new_slot = crafter_action(normalize_action(keys), slot)
    assert (name, new_slot) == (expected, slot_after)


# move_over_attack=True (WorldConfig `move_over_attack`): a move key held with attack moves or turns, the hit waits.
# (pressed keys) -> (crafter action with the option, without it: the table's priority)
MOVE_OVER_ATTACK = [
    ({"attack": 1}, "do", "do"),
    ({"attack": 1, "left": 1}, "move_left", "do"),
    ({"attack": 1, "forward": 1}, "move_up", "do"),
    ({"attack": 1, "back": 1, "right": 1}, "move_down", "do"),
    ({"attack": 1, "forward": 1, "back": 1}, "do", "do"),  # the moves cancel: nothing held but attack
    ({"attack": 1, "sneak": 1}, "do", "do"),
    ({"attack": 1, "sneak": 1, "left": 1}, "move_left", "do"),
    ({"sneak": 1, "left": 1}, "sleep", "sleep"),
    ({"use": 1, "attack": 1, "forward": 1}, "place_stone", "place_stone"),
    ({"inventory": 1, "attack": 1, "left": 1}, "make_wood_pickaxe", "make_wood_pickaxe"),
]


@pytest.mark.parametrize("keys,with_option,without", MOVE_OVER_ATTACK)
def test_move_over_attack_lets_a_held_move_key_win_over_attack(keys, with_option, without):
    act = normalize_action(keys)
    assert crafter_action(act, 0, move_over_attack=True) == (with_option, 0)
    assert crafter_action(act, 0) == (without, 0)


def test_move_over_attack_turns_to_a_tree_with_the_button_held_then_hits_it():
    """Beside a tree, facing grass: attack + the key toward the tree turns the player (no log, no move); the next
    attack takes the log. Without the option the same keys hit the grass in front and leave the facing as it was."""
    for over, facing, wood in ((True, (0, -1), [0, 1]), (False, (0, 1), [0, 0])):
        env = CrafterEnv(frame_size=(64, 36), tile_px=4, area=(32, 32), tree_logs=3, move_over_attack=over)
        env.reset(seed=1)
        px, py = (int(v) for v in env.player.pos)
        env.world[(px, py - 1)], env.world[(px, py + 1)] = "tree", "grass"
        env.player.facing = (0, 1)  # facing the grass below
        got = []
        for action in ({"attack": 1, "forward": 1}, {"attack": 1}):
            assert env.crafter_name(action) == ("move_up" if over and "forward" in action else "do")
            _, _, _, info = env.step(action)
            got.append(info["inventory"]["wood"])
            if len(got) == 1:
                assert info["facing"] == facing and info["player_pos"] == (px, py), over
                assert info["crafter_action"] == ("move_up" if over else "do")
        assert got == wood, over
    with pytest.raises(ValueError, match="move_over_attack"):
        CrafterEnv(move_over_attack="yes")


def test_every_crafter_action_is_reachable_and_inverse_holds():
    assert set(PLACE_SLOTS.values()) | set(CRAFT_SLOTS.values()) | {
        "noop", "do", "sleep", "move_up", "move_down", "move_left", "move_right"} == set(CRAFTER_ACTIONS)
    for name in CRAFTER_ACTIONS:
        for slot in (0, 3, 8):
            got, _ = crafter_action(normalize_action(action_for(name, slot)), slot)
            assert got == name


def test_normalize_action_accepts_batches_and_rejects_bad_input():
    act = normalize_action({"attack": np.array([1]), "camera": np.array([[1.5, -3.0]])})
    assert act["attack"] == 1 and act["camera"].dtype == np.float32 and act["camera"].tolist() == [1.5, -3.0]
    assert set(act) == set(ACTION_KEYS) and act["forward"] == 0
    with pytest.raises(ActionError, match="unknown action key"):
        normalize_action({"fly": 1})
    with pytest.raises(ActionError, match="0 or 1"):
        normalize_action({"attack": 2})
    with pytest.raises(ActionError, match="pitch, yaw"):
        normalize_action({"camera": [1.0, 2.0, 3.0]})
    with pytest.raises(ActionError, match="finite"):
        normalize_action({"camera": [float("nan"), 0.0]})
    with pytest.raises(ActionError, match="dict"):
        normalize_action([1, 0])


def test_null_actions_and_exact_cameras():
    assert is_null_action(noop_action()) and is_null_action({})
    assert not is_null_action({"camera": [0.0, 3.0]}) and not is_null_action({"jump": 1})
    assert all(is_exact_camera(3.0 * k) for k in range(-60, 61))
    assert not is_exact_camera(1.05)  # 7 counts: VPT's int truncation would give 1 degree


@pytest.fixture(scope="module")
def env():
    return make_env("crafter", max_steps=500)


def test_reset_step_shapes_and_info(env):
    obs = env.reset(seed=11)
    assert obs["pov"].shape == (360, 640, 3) and obs["pov"].dtype == np.uint8
    obs, reward, done, info = env.step({"forward": 1})
    assert obs["pov"].shape == (360, 640, 3) and isinstance(reward, float) and done is False
    assert set(ACHIEVEMENTS) == set(info["achievements"]) and len(ACHIEVEMENTS) == 22
    assert info["inventory"]["health"] == 9 and info["crafter_action"] == "move_up"
    assert info["facing"] == (0, -1)


def test_faced_tile_is_outlined_and_follows_the_player():
    """The tile `do`/`use` act on carries a white outline (Minecraft's block outline); turning moves it."""
    tile = 20
    env = CrafterEnv(frame_size=(16 * tile, 9 * tile), tile_px=tile, area=(32, 32))
    plain = CrafterEnv(frame_size=(16 * tile, 9 * tile), tile_px=tile, area=(32, 32), target_outline=False)

    def border(pov, x, y):  # the outline ring of view tile (x, y): rows/columns of the tile's edge
        t = pov[y * tile:(y + 1) * tile, x * tile:(x + 1) * tile]
        ring = np.concatenate([t[:2].reshape(-1, 3), t[-2:].reshape(-1, 3), t[:, :2].reshape(-1, 3),
                               t[:, -2:].reshape(-1, 3)])
        return (ring == 255).all(axis=1).mean()

    for facing_key, (dx, dy) in (("left", (-1, 0)), ("back", (0, 1)), ("right", (1, 0))):
        env.reset(seed=4), plain.reset(seed=4)
        _, _, _, info = env.step({facing_key: 1})
        pov = env.step({"camera": [0.0, 3.0]})[0]["pov"]  # a no-op step: the frame shows the new facing
        plain.step({facing_key: 1})
        pov_plain = plain.step({"camera": [0.0, 3.0]})[0]["pov"]
        fx, fy = env.last_info["facing"]
        assert (fx, fy) == (dx, dy)
        x, y = 8 + dx, 4 + dy  # the player sits at view tile (8, 4) of 16 x 8
        assert border(pov, x, y) == 1.0 and border(pov_plain, x, y) < 0.5
        others = [(8 + ox, 4 + oy) for ox, oy in ((-1, 0), (1, 0), (0, -1), (0, 1)) if (ox, oy) != (dx, dy)]
        assert all(border(pov, ox, oy) < 0.5 for ox, oy in others)
        ys, xs = np.nonzero((pov != pov_plain).any(axis=2))  # only that tile differs from crafter's look
        assert ys.size and xs.min() >= x * tile and xs.max() < (x + 1) * tile
        assert ys.min() >= y * tile and ys.max() < (y + 1) * tile
    assert env.last_info["player_pos"] == plain.last_info["player_pos"]  # looks only: same world


def test_seeds_make_episodes_reproducible():
    env = CrafterEnv(max_steps=500, area=(32, 32))  # a small world: world generation dominates this test
    rng = np.random.default_rng(0)
    keys = ["forward", "back", "left", "right", "attack", "use", "sneak"]
    actions = [{keys[rng.integers(len(keys))]: 1, "camera": [0.0, 3.0]} for _ in range(40)]

    def play(seed):
        frames = [env.reset(seed)["pov"]]
        infos = []
        for a in actions:
            obs, _, done, info = env.step(a)
            frames.append(obs["pov"])
            infos.append((info["player_pos"], info["inventory"]))
            if done:
                break
        return frames, infos

    f1, i1 = play(5)
    f2, i2 = play(5)
    f3, _ = play(6)
    assert len(f1) == len(f2) and all(np.array_equal(a, b) for a, b in zip(f1, f2)) and i1 == i2
    assert not np.array_equal(f1[0], f3[0])


def _world_state(env):
    w = env.world
    objs = [(type(o).__name__, tuple(int(v) for v in o.pos), getattr(o, "health", None)) for o in w.objects]
    kind, keys, pos, *_ = w.random.get_state()
    return w._mat_map.copy(), w._obj_map.copy(), objs, (keys.tobytes(), pos)


def test_a_remembered_world_is_the_world_crafter_generates():
    """Evaluations replay a dozen worlds in every cell; generation (~2 s of pure-Python noise) runs once per
    world and a reset of a remembered one restores it exactly: materials, creatures in order, the RNG after, play."""
    import time

    from steve1_ray.world import crafter_env as C

    rng = np.random.default_rng(1)
    keys = ["forward", "back", "left", "right", "attack", "use", "sneak"]
    actions = [{keys[rng.integers(len(keys))]: 1} for _ in range(150)]

    def play(env, seed):
        t = time.perf_counter()
        obs = env.reset(seed)
        took = time.perf_counter() - t
        start = _world_state(env)
        env.world.daylight = 0.2  # night: its noise and the zombies' moves draw on the RNGs too
        frames, infos = [obs["pov"]], []
        for a in actions:
            obs, _, done, info = env.step(a)
            frames.append(obs["pov"])
            infos.append((info["player_pos"], info["inventory"], info["achievements"]))
            if done:
                break
        return start, frames, infos, _world_state(env), took

    C._WORLDS.clear()
    made = play(CrafterEnv(max_steps=1000, tree_logs=4), 11)  # generated by crafter
    again = play(CrafterEnv(max_steps=1000, tree_logs=4), 11)  # another env, from the cache
    assert len(C._WORLDS) == 1
    for at in (0, 3):  # the world after reset, and after the episode
        (mats, ids, objs, rng_state), (mats2, ids2, objs2, rng_state2) = made[at], again[at]
        assert np.array_equal(mats, mats2) and np.array_equal(ids, ids2) and objs == objs2 and rng_state == rng_state2
    assert made[2] == again[2]
    assert len(made[1]) == len(again[1]) > 100 and all(np.array_equal(a, b) for a, b in zip(made[1], again[1]))
    assert again[4] < made[4] / 5, (made[4], again[4])  # and it is what makes a replayed reset cheap
    # another seed is another world; the cache keeps the most recent WORLD_CACHE_SIZE
    assert not np.array_equal(play(CrafterEnv(max_steps=10, area=(32, 32)), 12)[0][0], made[0][0][:32, :32])
    for seed in range(C.WORLD_CACHE_SIZE + 1):
        CrafterEnv(max_steps=10, area=(16, 16)).reset(seed)
    assert len(C._WORLDS) == C.WORLD_CACHE_SIZE


def test_the_fast_local_view_draws_crafters_pixels():
    """The tile atlas gather draws exactly what crafter's per-tile loop draws: at the world's edges, by day, at
    night (same noise RNG), asleep, with creatures, at two tile sizes."""
    from crafter import engine

    rng = np.random.default_rng(3)
    keys = ["forward", "back", "left", "right", "attack", "use", "sneak"]
    checked = creatures = edges = 0
    for area, tile_px, seed in (((16, 16), 20, 1), ((64, 64), 7, 2)):
        env = CrafterEnv(max_steps=400, area=area, tile_px=tile_px, zombie_rate=3.0)
        env.reset(seed)
        core = env._core
        view, unit = core._local_view, np.array([tile_px, tile_px])
        for t in range(120):
            _, _, done, _ = env.step({keys[rng.integers(len(keys))]: 1})
            if done:
                break
            core._world.daylight = [1.0, 0.7, 0.3, 0.05][t % 4]
            core._player.sleeping = t % 7 == 0
            view.rng = np.random.RandomState(t)
            fast = view(core._player, unit)
            view.rng = np.random.RandomState(t)
            slow = engine.LocalView.__call__(view, core._player, unit)
            assert fast.dtype == slow.dtype and np.array_equal(fast, slow), (area, t)
            checked += 1
            x0, y0 = core._player.pos - view._offset
            inside = core._world._obj_map[max(x0, 0):x0 + 16, max(y0, 0):y0 + 8]
            creatures += int((inside > 0).sum() > 1)  # someone besides the player
            edges += int(x0 < 0 or y0 < 0 or x0 + 16 > area[0] or y0 + 8 > area[1])
    assert checked >= 100 and creatures >= 20 and edges >= 20, (checked, creatures, edges)


def test_frame_size_does_not_change_world_dynamics():
    """Night noise has its own RNG, so a smaller render replays the same world."""
    small = CrafterEnv(frame_size=(160, 90), tile_px=10, max_steps=400, area=(32, 32))
    big = CrafterEnv(max_steps=400, area=(32, 32))
    small.reset(3), big.reset(3)
    small.world.daylight = big.world.daylight = 0.1
    for t in range(40):
        a = {["left", "right", "forward", "back"][t % 4]: 1}
        _, _, d1, i1 = small.step(a)
        _, _, d2, i2 = big.step(a)
        assert i1["player_pos"] == i2["player_pos"] and i1["inventory"] == i2["inventory"]
        if d1 or d2:
            break


def test_attack_collects_wood_through_the_minerl_action_space(env):
    """Walk to a tree with movement keys, turn to it, press attack: crafter's collect_wood unlocks."""
    from steve1_ray.world.demonstrators import Demonstrator

    env.reset(seed=2)
    demo = Demonstrator(env, seed=0, noise=0.0, goals=["collect_wood"])
    demo.reset()
    for _ in range(300):
        _, _, done, info = env.step(demo.act())
        if info["achievements"]["collect_wood"] or done:
            break
    assert info["achievements"]["collect_wood"] >= 1 and info["inventory"]["wood"] >= 1


def test_misuse_has_clear_errors(env):
    fresh = CrafterEnv(max_steps=2)
    with pytest.raises(RuntimeError, match="reset"):
        fresh.step({})
    fresh.reset(0)
    fresh.step({}), fresh.step({})
    with pytest.raises(RuntimeError, match="done=True"):
        fresh.step({})
    with pytest.raises(ValueError, match="seed"):
        fresh.reset(-1)
    with pytest.raises(ValueError, match="unknown world backend"):
        make_env("minecraft")
    with pytest.raises(ValueError, match="tile_px"):
        CrafterEnv(tile_px=1)


@pytest.mark.parametrize("logs", [1, 3])
def test_a_tree_yields_tree_logs_logs_then_turns_to_grass(logs):
    """tree_logs=1 is crafter's tree (grass after one log); tree_logs=n gives n logs, one per `do`."""
    env = CrafterEnv(frame_size=(64, 36), tile_px=4, area=(32, 32), tree_logs=logs)
    env.reset(seed=1)
    px, py = (int(v) for v in env.player.pos)
    env.world[(px, py - 1)] = "tree"  # the tile above the player: face it by moving up (blocked)
    env.step({"forward": 1})
    assert env.last_info["facing"] == (0, -1)
    got = []
    for _ in range(logs + 2):
        _, _, _, info = env.step({"attack": 1})
        got.append((info["inventory"]["wood"], env.world[(px, py - 1)][0]))
    assert [w for w, _ in got] == [min(i + 1, logs) for i in range(logs + 2)]
    assert [m for _, m in got] == ["tree"] * (logs - 1) + ["grass"] * 3
    assert info["achievements"]["collect_wood"] == logs


def test_a_log_takes_log_hits_hits_and_a_tree_keeps_them():
    """log_hits=3: every third `do` on a tree gives a log; the hits a tree has taken are kept when the player
    turns away and comes back (per tile, as what is left of the tree)."""
    env = CrafterEnv(frame_size=(64, 36), tile_px=4, area=(32, 32), tree_logs=2, log_hits=3)
    env.reset(seed=1)
    px, py = (int(v) for v in env.player.pos)
    env.world[(px, py - 1)] = "tree"
    env.step({"forward": 1})
    wood = []
    for _ in range(2):
        wood.append(env.step({"attack": 1})[3]["inventory"]["wood"])
    env.world[(px - 1, py)] = "water"  # turn away to a tile that blocks, hit that, turn back
    env.step({"left": 1})
    env.step({"attack": 1})
    env.step({"forward": 1})
    for _ in range(5):
        _, _, _, info = env.step({"attack": 1})
        wood.append(info["inventory"]["wood"])
    assert wood == [0, 0, 1, 1, 1, 2, 2]  # hit 3 (after the break), then 6: the tree's second and last log
    assert env.world[(px, py - 1)][0] == "grass" and info["achievements"]["collect_wood"] == 2
    assert env.player.hits_taken == {} and env.player.logs_left == {}


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, 101])
def test_log_hits_must_be_a_small_positive_integer(bad):
    with pytest.raises(ValueError, match="log_hits"):
        CrafterEnv(frame_size=(64, 36), tile_px=4, log_hits=bad)
    with pytest.raises(ConfigError, match="world.log_hits"):
        WorldConfig(log_hits=bad)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, 101])
def test_tree_logs_must_be_a_small_positive_integer(bad):
    with pytest.raises(ValueError, match="tree_logs"):
        CrafterEnv(frame_size=(64, 36), tile_px=4, tree_logs=bad)


def _cow_steps(env, steps=120):
    """How often a cow moved per turn, over `steps` turns of a player standing still (`noop` is not an action
    here: the camera glance keeps the player in place)."""
    from crafter import objects

    where = {id(o): tuple(o.pos) for o in env.world.objects if type(o) is objects.Cow}
    moved = turns = 0
    frames = []
    for i in range(steps):
        obs, _, done, _ = env.step({"camera": [0.0, 3.0 if i % 2 else -3.0]})
        frames.append(obs["pov"])
        for o in env.world.objects:
            if type(o) is objects.Cow and id(o) in where:
                turns += 1
                moved += tuple(o.pos) != where[id(o)]
                where[id(o)] = tuple(o.pos)
        if done:
            break
    return moved / max(turns, 1), frames


def test_cows_graze_at_cow_move_and_crafter_s_own_rate_plays_the_same_world():
    kw = dict(frame_size=(64, 36), tile_px=4, area=(48, 48), zombie_rate=0.0)
    own, frames = _cow_steps(_reset(CrafterEnv(**kw)))
    same, frames_same = _cow_steps(_reset(CrafterEnv(**kw, cow_move=0.5)))
    assert own == same and all(np.array_equal(a, b) for a, b in zip(frames, frames_same))
    # crafter's cows step on about half their turns (a blocked step stays put); grazing ones rarely, or never
    slow, _ = _cow_steps(_reset(CrafterEnv(**kw, cow_move=0.1)))
    still, _ = _cow_steps(_reset(CrafterEnv(**kw, cow_move=0.0)))
    assert own > 0.25 and 0.02 < slow < 0.5 * own and still == 0.0, (own, slow, still)


def _reset(env, seed=3):
    env.reset(seed=seed)
    return env


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "fast"])
def test_cow_move_must_be_a_chance(bad):
    with pytest.raises(ValueError, match="cow_move"):
        CrafterEnv(frame_size=(64, 36), tile_px=4, cow_move=bad)
    from steve1_ray.config import ConfigError
    from steve1_ray.world.config import WorldConfig

    with pytest.raises(ConfigError, match="world.cow_move"):
        WorldConfig(cow_move=bad)


def test_the_grazing_update_at_crafter_s_rate_plays_crafter_s_world(monkeypatch):
    """`_cow_update` itself (not only crafter's own update, which 0.5 keeps) draws the world RNG as crafter does."""
    import steve1_ray.world.crafter_env as ce

    kw = dict(frame_size=(64, 36), tile_px=4, area=(48, 48), zombie_rate=0.0)
    own, frames = _cow_steps(_reset(CrafterEnv(**kw)))
    monkeypatch.setattr(ce, "COW_MOVE", -1.0)  # every cow gets the bound update, at 0.5
    env = _reset(CrafterEnv(**kw, cow_move=0.5))
    assert all(getattr(o, "move_chance", None) == 0.5 for o in env.world.objects if type(o).__name__ == "Cow")
    ours, frames_ours = _cow_steps(env)
    assert own == ours and all(np.array_equal(a, b) for a, b in zip(frames, frames_ours))


def _cows(env):
    from crafter import objects

    return sorted(tuple(int(v) for v in o.pos) for o in env.world.objects if type(o) is objects.Cow)


def test_cow_herds_put_n_times_the_cows_on_the_same_land_and_keep_them():
    """cow_herds=3: the same terrain as crafter's world of that seed, with its own cows still there and about
    twice as many more on the grass; crafter's per-chunk balance, scaled, keeps them through play."""
    kw = dict(frame_size=(64, 36), tile_px=4, area=(48, 48), zombie_rate=0.0)
    own, herd = _reset(CrafterEnv(**kw)), _reset(CrafterEnv(**kw, cow_herds=3))
    assert np.array_equal(own.world._mat_map, herd.world._mat_map)
    mine, theirs = _cows(own), _cows(herd)
    assert set(mine) <= set(theirs) and 2 * len(mine) <= len(theirs) <= 5 * len(mine), (len(mine), len(theirs))
    grass = herd.world._mat_ids["grass"]
    px, py = (int(v) for v in herd.player.pos)
    assert all(herd.world._mat_map[x, y] == grass and (x - px) ** 2 + (y - py) ** 2 > 9 for x, y in theirs)
    assert _cows(_reset(CrafterEnv(**kw, cow_herds=3))) == theirs  # the same seed, the same herds
    assert _cows(_reset(CrafterEnv(**kw, cow_herds=3), seed=4)) != theirs
    for env in (own, herd):  # 100 of crafter's balance rounds (one each 10 steps of play)
        for _ in range(100):
            for chunk, objs in list(env._core._world.chunks.items()):
                env._core._balance_chunk(chunk, objs)
    assert len(_cows(herd)) >= 2 * len(_cows(own)), (len(_cows(own)), len(_cows(herd)))


@pytest.mark.parametrize("bad", [0, 11, 1.5, True, "many"])
def test_cow_herds_must_be_a_small_positive_integer(bad):
    with pytest.raises(ValueError, match="cow_herds"):
        CrafterEnv(frame_size=(64, 36), tile_px=4, cow_herds=bad)
    from steve1_ray.config import ConfigError
    from steve1_ray.world.config import WorldConfig

    with pytest.raises(ConfigError, match="world.cow_herds"):
        WorldConfig(cow_herds=bad)
