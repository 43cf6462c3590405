"""benchmarks/guided_do.py: the crafter-action view of a policy's conditional, unconditional and guided distributions."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "guided_do", Path(__file__).resolve().parents[1] / "benchmarks" / "guided_do.py")
gd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gd)


def test_every_button_combination_plays_exactly_one_crafter_action():
    acts, m = gd.action_matrix()
    assert m.shape == (gd.N_BUTTONS, len(acts)) and bool((m.sum(1) == 1).all())
    assert {"do", "noop", "move_left", "move_right", "move_up", "move_down", "sleep"} <= set(acts)
    assert int(m[:, acts.index("do")].sum()) > 1  # attack with other keys is still `do`
    # in a `move_over_attack` world a move key held with attack moves: fewer combinations play `do`, more move
    acts2, m2 = gd.action_matrix(move_over_attack=True)
    assert acts2 == acts and bool((m2.sum(1) == 1).all())
    do, up = acts.index("do"), acts.index("move_up")
    assert int(m2[:, do].sum()) < int(m[:, do].sum()) and int(m2[:, up].sum()) > int(m[:, up].sum())
    assert bool((m2[:, do] <= m[:, do]).all())  # nothing becomes `do` that was not


@pytest.fixture(scope="module")
def released_policy():
    from steve1_ray.models.loading import RELEASED_DIR, load_goal_models, load_policy_spec

    rel = RELEASED_DIR / "world"
    policy = load_policy_spec("released", seed=0)  # the release's STEVE-1 policy with its own architecture
    mineclip, prior = load_goal_models(rel / "mineclip.pth", rel / "prior.pt", embed_dim=policy.cfg.embed_dim)
    return policy, mineclip, prior


def test_trace_sums_to_one_and_scale_zero_is_the_conditional_policy(released_policy):
    from steve1_ray.agent import text_goal
    from steve1_ray.world.crafter_env import CrafterEnv

    policy, mineclip, prior = released_policy
    goal = text_goal(mineclip, prior, "chop a tree", prior_seed=0)
    env = CrafterEnv(zombie_rate=0.2, target_outline=True, tree_logs=4, area=(24, 24))
    out = gd.trace(policy, goal, 0.0, env, [500], 12)
    assert out["steps"] == 12 == sum(t["steps"] for t in out["do_by_tile"].values())
    for k in ("cond", "uncond", "guided"):
        assert sum(out["share"][k].values()) == pytest.approx(1.0, abs=0.03)  # shares under 0.005 are left out
    for t in out["do_by_tile"].values():
        assert t["guided"] == pytest.approx(t["cond"], abs=1e-3)  # scale 0: the guided policy is the conditional one
    guided = gd.trace(policy, goal, 6.0, env, [500], 12)
    assert guided["share"]["guided"] != guided["share"]["cond"]
