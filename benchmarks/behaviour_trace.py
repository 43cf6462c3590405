"""What an agent does at the tile it faces, side by side with the scripted demonstrator, in the embedded world.

    # the demonstrator's ceiling: free play vs a task preferred for the whole episode
    python benchmarks/behaviour_trace.py --demo none,collect_wood,collect_sapling,collect_drink,eat_cow,place_table
    # a trained policy: unconditioned, a goal at scale 0 and at scale 6, and the demonstrator in the same worlds
    python benchmarks/behaviour_trace.py --policy <run>/train/policy/checkpoint_<time> --runs uncond,s0,s6 \
        --prompt "chop a tree" --embedder <run>/embedder/mineclip.pth --prior <run>/prior/prior.pt --demo none

Every run plays `--episodes` worlds (seeds 500, 501, ...) for `--steps` steps and reports, per episode, the five
evaluated achievements and, per step, how often the agent stands next to / faces a tree, water, a cow or free
grass and how often it presses `do` (MineRL `attack`) while facing each, how often, standing beside one without
facing it, it takes the move that turns it to face it (crafter turns a player who moves into a solid tile), and
what share of its `do` on water (on a cow) comes with its drink (food) already full. The goal is a prompt through
the embedder and the prior (decoded at z = 0), or a (D,) `.npy` embedding (`--goal`); `sK` means guidance scale K.
No video is written.
"""
from __future__ import annotations

import argparse
import collections
import json

import numpy as np

from steve1_ray.world.crafter_env import CrafterEnv
from steve1_ray.world.demonstrators import DIRS, Demonstrator

TARGETS = ("collect_wood", "collect_sapling", "collect_drink", "eat_cow", "place_table")
NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))
TOWARD = {offset: f"move_{name}" for name, offset in DIRS.items()}
"""the crafter move that turns the player to face the tile at that offset (moving into a solid tile only turns)"""
THINGS = {"tree": lambda m, o: m == "tree", "water": lambda m, o: m == "water",
          "cow": lambda m, o: type(o).__name__ == "Cow", "grass": lambda m, o: m == "grass" and o is None}


def play(env: CrafterEnv, act, seed: int, steps: int, stats: collections.Counter) -> dict:
    """One episode; `act(obs)` -> MineRL action. Adds per-step counts to `stats`; returns the achievements."""
    obs = env.reset(seed=seed)
    for _ in range(steps):
        action = act(obs)
        name = env.crafter_name(action)
        p, world = env.player, env.world
        _, faced = env.faced
        stats["steps"] += 1
        stats["do"] += name == "do"
        stats["moves"] += name.startswith("move_")
        for thing, test in THINGS.items():
            if test(*faced):
                stats[f"face {thing}"] += 1
                stats[f"do facing {thing}"] += name == "do"
                need = {"water": "drink", "cow": "food"}.get(thing)
                if need:  # pressing `do` with that need already full (9): drinking or hunting for its own sake
                    stats[f"do facing {thing}, {need} full"] += name == "do" and p.inventory[need] >= 9
            beside = [d for d in NEIGHBOURS if test(*world[(int(p.pos[0] + d[0]), int(p.pos[1] + d[1]))])]
            stats[f"next to {thing}"] += bool(beside)
            if beside and not test(*faced):  # one step from facing it: does the agent turn to it?
                turns = name in {TOWARD[d] for d in beside}
                stats[f"beside {thing}, not facing"] += 1
                stats[f"turns to {thing}"] += turns
                if THINGS["grass"](*faced):  # with nothing in front to act on
                    stats[f"beside {thing}, facing grass"] += 1
                    stats[f"turns to {thing} from grass"] += turns
        obs, _, done, _ = env.step(action)
        if done:
            break
    return {k: int(env.player.achievements.get(k, 0)) for k in TARGETS}


def summarise(label: str, stats: collections.Counter, achieved: list[dict]) -> dict:
    n, steps = len(achieved), max(1, stats["steps"])
    row = {"run": label, "episodes": n}
    row.update({k: round(sum(a[k] for a in achieved) / n, 2) for k in TARGETS})
    for thing in THINGS:
        row[f"P(do | facing {thing})"] = round(stats[f"do facing {thing}"] / max(1, stats[f"face {thing}"]), 2)
        row[f"facing {thing}"] = round(stats[f"face {thing}"] / steps, 3)
        row[f"next to {thing}"] = round(stats[f"next to {thing}"] / steps, 3)
        row[f"P(turn to {thing} | beside it, not facing)"] = round(
            stats[f"turns to {thing}"] / max(1, stats[f"beside {thing}, not facing"]), 2)
        row[f"P(turn to {thing} | beside it, facing grass)"] = round(
            stats[f"turns to {thing} from grass"] / max(1, stats[f"beside {thing}, facing grass"]), 2)
        row[f"beside {thing}, facing grass"] = round(stats[f"beside {thing}, facing grass"] / steps, 3)
    for thing, need in (("water", "drink"), ("cow", "food")):
        row[f"share of do facing {thing} at full {need}"] = round(
            stats[f"do facing {thing}, {need} full"] / max(1, stats[f"do facing {thing}"]), 2)
    row.update({"do": round(stats["do"] / steps, 3), "moves": round(stats["moves"] / steps, 3)})
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", help="training checkpoint folder (or .model file) of the policy to trace")
    ap.add_argument("--weights", help="weights for a .model --policy (e.g. the release's steve1.weights)")
    ap.add_argument("--goal", help="(D,) goal embedding .npy for the conditioned runs")
    ap.add_argument("--prompt", help="text goal for the conditioned runs (needs --embedder and --prior)")
    ap.add_argument("--embedder", help="the embedder the policy's data was embedded with (mineclip.pth)")
    ap.add_argument("--prior", help="the prior (prior.pt) turning the prompt's text embedding into a goal")
    ap.add_argument("--runs", default="uncond,s0,s6", help="policy runs: uncond, s0 (plain conditional), sK")
    ap.add_argument("--demo", default="", help="demonstrator runs: focus goals, `none` = free play")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--zombie-rate", type=float, default=0.2)
    ap.add_argument("--no-outline", action="store_true", help="crafter's own look (policies trained before it)")
    ap.add_argument("--tree-logs", type=int, default=1, help="logs per tree (the recordings' `tree_logs`)")
    ap.add_argument("--move-over-attack", action="store_true", help="the world's `move_over_attack` (docs/world.md)")
    args = ap.parse_args(argv)
    env = CrafterEnv(zombie_rate=args.zombie_rate, target_outline=not args.no_outline, tree_logs=args.tree_logs,
                     move_over_attack=args.move_over_attack)
    seeds = [500 + i for i in range(args.episodes)]

    for focus in [f for f in args.demo.split(",") if f]:
        stats, achieved = collections.Counter(), []
        for seed in seeds:
            demo = Demonstrator(env, seed=seed, focus=None if focus == "none" else focus)
            env.reset(seed=seed)
            demo.reset()
            achieved.append(play(env, lambda obs: demo.act(), seed, args.steps, stats))
        print(json.dumps(summarise(f"demonstrator ({focus})", stats, achieved)), flush=True)

    if not args.policy:
        return
    import torch

    from steve1_ray.agent import act_batch, new_stream
    from steve1_ray.models.loading import load_policy_spec

    torch.set_grad_enabled(False)
    policy = load_policy_spec(args.policy, args.weights, seed=0)
    zero = np.zeros(policy.cfg.embed_dim, np.float32)
    goal = None
    if args.prompt:
        if not (args.embedder and args.prior):
            ap.error("--prompt needs --embedder and --prior")
        from steve1_ray.models.loading import load_embedder
        from steve1_ray.models.prior import load_prior

        text = load_embedder(args.embedder).encode_text([args.prompt]).float()
        goal = load_prior(args.prior).eval().sample(text, seed=0, deterministic=True).float().numpy().reshape(-1)
    elif args.goal:
        goal = np.load(args.goal).astype(np.float32).reshape(-1)
    for run in [r for r in args.runs.split(",") if r]:
        if run != "uncond" and goal is None:
            ap.error(f"run {run!r} needs --prompt or --goal")
        scale = None if run in ("uncond", "s0") else float(run[1:])
        stats, achieved = collections.Counter(), []
        for i, seed in enumerate(seeds):
            stream = new_stream(policy, zero if run == "uncond" else goal, scale, seed=i)
            achieved.append(play(env, lambda obs: act_batch(policy, [stream], [obs["pov"]])[0], seed, args.steps,
                                 stats))
        print(json.dumps(summarise(f"policy ({run})", stats, achieved)), flush=True)


if __name__ == "__main__":
    main()
