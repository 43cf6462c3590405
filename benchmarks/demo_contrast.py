"""How much more of a goal does a demonstrator *task* achieve than free play? The ceiling of prompt following.

A policy imitates the recordings: guided by a prompt it can at best do what the demonstrator did on that task,
and unguided what it did in free play (plus the tasks mixed in). The evaluation's rule asks for >= 2x the
unconditioned agent, so a goal whose task/free-play ratio is near 2 in the recordings themselves cannot be
followed. This plays the scripted demonstrator (no video, no policy) on the same worlds in free play and in
each task, for each appetite, and prints target counts per episode and the ratios, side by side.

    python benchmarks/demo_contrast.py [--worlds 12] [--steps 300] [--appetites eager needs] [--sight]
        [--stop-at-full]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

TARGETS = {"collect_wood": "collect_wood", "collect_sapling": "collect_sapling", "collect_drink": "collect_drink",
           "eat_cow": "eat_cow", "place_table": "place_table"}


FULL = {"collect_drink": "drink", "collect_wood": "wood", "eat_cow": "food"}  # target -> what it fills


def play(seed: int, steps: int, focus: str | None, appetite: str, world: dict, sight: bool = False,
         stop_at_full: bool = False) -> dict:
    """Target counts of one episode, plus `<target>_at_full` for drink, wood and cows: those taken with that
    item (need) already at 9."""
    from steve1_ray.world.crafter_env import CrafterEnv
    from steve1_ray.world.demonstrators import Demonstrator

    env = CrafterEnv(max_steps=steps, **world)
    demo = Demonstrator(env, seed=seed, focus=focus, appetite=appetite, sight=sight, stop_at_full=stop_at_full)
    env.reset(seed)
    demo.reset()
    done, info, at_full = False, env.last_info, dict.fromkeys(FULL, 0)
    while not done:
        full = {k: env.player.inventory[item] >= 9 for k, item in FULL.items()}
        before = {k: int(info["achievements"].get(k, 0)) for k in FULL}
        _, _, done, info = env.step(demo.act())
        for k in FULL:
            at_full[k] += (int(info["achievements"].get(k, 0)) - before[k]) if full[k] else 0
    return {**{k: int(info["achievements"].get(k, 0)) for k in TARGETS.values()},
            **{f"{k}_at_full": v for k, v in at_full.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=5000, help="first world seed (the evaluation's are 0..)")
    ap.add_argument("--appetites", nargs="+", default=["eager", "needs"])
    ap.add_argument("--sight", action="store_true", help="demonstrators that know only what the frame shows")
    ap.add_argument("--stop-at-full", action="store_true",
                    help="gathering goals (drink, cow, wood, ...) other than the task's end once what they fill is full")
    ap.add_argument("--tree-logs", type=int, default=4, help="logs per tree (the release's and quick start's 4)")
    ap.add_argument("--log-hits", type=int, default=1, help="`do`s per log (world.log_hits; 1 = crafter's own)")
    ap.add_argument("--goals", nargs="+", default=list(TARGETS), choices=list(TARGETS), help="the tasks to play")
    args = ap.parse_args()
    # the release's and the quick start's world by default
    world = {"zombie_rate": 0.2, "tree_logs": args.tree_logs, "log_hits": args.log_hits}
    rows = []
    for appetite in args.appetites:
        t0 = time.time()
        kw = {"sight": args.sight, "stop_at_full": args.stop_at_full}
        free = [play(args.seed + w, args.steps, None, appetite, world, **kw) for w in range(args.worlds)]
        for goal, target in ((g, TARGETS[g]) for g in args.goals):
            task = [play(args.seed + w, args.steps, goal, appetite, world, **kw) for w in range(args.worlds)]
            f, t = np.mean([x[target] for x in free]), np.mean([x[target] for x in task])
            rows.append({"appetite": appetite, "goal": goal, "free_play": round(float(f), 2),
                         "task": round(float(t), 2), "ratio": round(float(t / f), 2) if f else None})
            if target in FULL:
                rows[-1]["at_full"] = [round(float(np.mean([x[f"{target}_at_full"] for x in runs])), 2)
                                       for runs in (free, task)]
        print(f"[{appetite}] {args.worlds} worlds x 6 episodes in {time.time() - t0:.0f} s", flush=True)
    print("\n| goal | " + " | ".join(f"{a}: free play / task (ratio)" for a in args.appetites) + " |")
    print("|---|" + "---|" * len(args.appetites))
    for goal in args.goals:
        cells = [next(r for r in rows if r["goal"] == goal and r["appetite"] == a) for a in args.appetites]
        print(f"| {goal} | " + " | ".join(f"{c['free_play']} / {c['task']} ({c['ratio']}x)" for c in cells) + " |")
    for r in rows:
        if "at_full" in r:
            print(f"[{r['appetite']}] {r['goal']} taken with it already full (9), free play / task: {r['at_full']}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
