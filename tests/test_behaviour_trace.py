"""benchmarks/behaviour_trace.py: what an agent does at the tile it faces and at the tiles beside it."""
import collections
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "behaviour_trace", Path(__file__).resolve().parents[1] / "benchmarks" / "behaviour_trace.py")
bt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bt)


def test_turning_to_a_tree_beside_the_player_is_counted_only_for_the_move_that_faces_it():
    from steve1_ray.world.crafter_env import CrafterEnv, action_for

    env = CrafterEnv(tree_logs=4, max_steps=10)
    moves = iter(["move_right", "move_left", "do"])

    def act(obs):  # a tree left of the player, grass everywhere else around it and in front
        x, y = (int(v) for v in env.player.pos)
        for dx, dy in bt.NEIGHBOURS:
            env.world[(x + dx, y + dy)] = "tree" if (dx, dy) == (-1, 0) else "grass"
        env.player.facing = (0, 1)
        return action_for(next(moves))

    stats = collections.Counter()
    bt.play(env, act, seed=3, steps=3, stats=stats)
    assert stats["beside tree, not facing"] == 3 and stats["turns to tree"] == 1  # move_left only
    row = bt.summarise("t", stats, [{k: 0 for k in bt.TARGETS}])
    assert row["P(turn to tree | beside it, not facing)"] == round(1 / 3, 2) and row["next to tree"] == 1.0
