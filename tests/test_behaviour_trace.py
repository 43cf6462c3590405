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
    # (move, what is in front): a tree is left of the player, grass on the other sides unless water is in front
    steps = iter([("move_right", "grass"), ("move_left", "grass"), ("do", "grass"), ("move_left", "water")])

    def act(obs):
        move, front = next(steps)
        x, y = (int(v) for v in env.player.pos)
        for dx, dy in bt.NEIGHBOURS:
            env.world[(x + dx, y + dy)] = "tree" if (dx, dy) == (-1, 0) else front if (dx, dy) == (0, 1) else "grass"
        env.player.facing = (0, 1)
        return action_for(move)

    stats = collections.Counter()
    bt.play(env, act, seed=3, steps=4, stats=stats)
    assert stats["beside tree, not facing"] == 4 and stats["turns to tree"] == 2  # the two move_left
    assert stats["beside tree, facing grass"] == 3 and stats["turns to tree from grass"] == 1
    row = bt.summarise("t", stats, [{k: 0 for k in bt.TARGETS}])
    assert row["P(turn to tree | beside it, not facing)"] == 0.5 and row["next to tree"] == 1.0
    assert row["P(turn to tree | beside it, facing grass)"] == round(1 / 3, 2)
