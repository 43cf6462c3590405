"""Where does guidance put the probability? A policy's action distribution in crafter terms, by the tile it faces.

A guided agent plays `--episodes` embedded worlds (seeds 500, 501, ...) toward a prompt at `--scale`; on every step the
8,641 button combinations of the conditional, the unconditional and the guided (`(1+s)·cond − s·uncond`) button
distributions are summed per crafter action (`crafter_action`: `do`, the four moves, `noop`, ...). Reported: each
action's mean share under the three, and per faced tile (tree, water, stone, grass, a cow, ...) how many steps faced
it and P(`do`) under the three; plus the guided mass on combinations the conditional policy itself gives < 1e-3
(guidance inflating rare combinations would show there).

    python benchmarks/guided_do.py --policy <run>/train/steve1/checkpoint_<time> --prompt "chop a tree" --scale 2 \\
        --embedder steve1_ray/released/world/mineclip.pth --prior steve1_ray/released/world/prior.pt --tree-logs 4

`--prompt none` plays the unconditioned agent (zero goal). Session 28 (benchmarks/RESULTS.md): guided toward wood the
quick start's policy pressed `do` at 0.98 whenever it faced stone, which it cannot mine, and faced stone on 78 % of
its steps.
"""
from __future__ import annotations

import argparse
import collections
import json

import numpy as np

from steve1_ray.actions import CAMERA_NULL_BIN, N_BUTTONS, N_CAMERA_BINS


def action_matrix(move_over_attack: bool = False):
    """(names of the crafter actions, (8641, A) 0/1 matrix: which crafter action each button combination plays), in
    a world with or without `move_over_attack` (docs/world.md: a move key held with attack then moves, not `do`)."""
    import torch

    from steve1_ray.agent import _to_env_rows
    from steve1_ray.world.crafter_env import crafter_action

    still = CAMERA_NULL_BIN * N_CAMERA_BINS + CAMERA_NULL_BIN  # the camera index that does not move (crafter ignores it)
    rows = _to_env_rows(np.arange(N_BUTTONS), np.full(N_BUTTONS, still))
    names = [crafter_action(r, 0, move_over_attack)[0] for r in rows]
    acts = sorted(set(names))
    m = torch.zeros(N_BUTTONS, len(acts))
    m[torch.arange(N_BUTTONS), torch.tensor([acts.index(n) for n in names])] = 1
    return acts, m


def faced(env) -> str:
    """What the player faces: a creature's kind (cow, zombie, ...) or the tile's material."""
    _, (material, obj) = env.faced
    return type(obj).__name__.lower() if obj is not None else str(material)


def trace(policy, goal, scale: float, env, seeds, steps: int) -> dict:
    """Play and sum the three distributions per crafter action and per faced tile."""
    import torch

    from steve1_ray.agent import _combine_rows, _sample, batched_log_probs, new_stream

    acts, m = action_matrix(env.move_over_attack)
    do = acts.index("do")
    s = float(scale)
    share = {k: np.zeros(len(acts)) for k in ("cond", "uncond", "guided")}
    by_tile = collections.defaultdict(collections.Counter)
    rare, n = [], 0
    with torch.inference_mode():
        for i, seed in enumerate(seeds):
            obs = env.reset(seed=seed)
            stream = new_stream(policy, goal, s, seed=i)  # two rows (cond, uncond) even at scale 0
            for _ in range(steps):
                lp = batched_log_probs(policy, [stream], [obs["pov"]])
                guided = _combine_rows(lp, [stream])  # (1+s)·cond − s·uncond, as the agent acts
                pc, pu = lp["buttons"][0].exp(), lp["buttons"][1].exp()
                pg = torch.softmax(guided["buttons"][0], -1)
                tile = faced(env)
                by_tile[tile]["steps"] += 1
                for k, p in (("cond", pc), ("uncond", pu), ("guided", pg)):
                    per = (p @ m).numpy()
                    share[k] += per
                    by_tile[tile][k] += float(per[do])
                rare.append(float(pg[pc < 1e-3].sum()))
                obs, _, done, _ = env.step(_sample([stream], guided)[0])
                n += 1
                if done:
                    break
    return {"steps": n, "rare_guided_mass": float(np.mean(rare)) if rare else 0.0,
            "share": {k: {a: round(float(v[j] / max(n, 1)), 3) for j, a in enumerate(acts) if v[j] / max(n, 1) >= 0.005}
                      for k, v in share.items()},
            "do_by_tile": {t: {"steps": c["steps"], **{k: round(c[k] / c["steps"], 3) for k in ("cond", "uncond", "guided")}}
                           for t, c in sorted(by_tile.items(), key=lambda kv: -kv[1]["steps"])}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="checkpoint folder, or a .model with --weights")
    ap.add_argument("--weights")
    ap.add_argument("--prompt", required=True, help="a text goal, or `none` for the unconditioned agent")
    ap.add_argument("--scale", type=float, default=2.0, help="guidance scale (0: the plain conditional policy)")
    ap.add_argument("--embedder", required=True)
    ap.add_argument("--prior", required=True)
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--tree-logs", type=int, default=4, help="the world's `tree_logs` (the release's 4)")
    ap.add_argument("--move-over-attack", action="store_true", help="the world's `move_over_attack` (docs/world.md)")
    args = ap.parse_args(argv)
    import torch

    from steve1_ray.agent import policy_embed_dim, text_goal
    from steve1_ray.models.loading import load_goal_models, load_policy_spec
    from steve1_ray.world.crafter_env import CrafterEnv

    torch.set_grad_enabled(False)
    policy = load_policy_spec(args.policy, args.weights, seed=0)
    dim = policy_embed_dim(policy)
    if args.prompt == "none":
        goal = np.zeros(dim, np.float32)
    else:
        mineclip, prior = load_goal_models(args.embedder, args.prior, embed_dim=dim)
        goal = text_goal(mineclip, prior, args.prompt, prior_seed=0)
    env = CrafterEnv(zombie_rate=0.2, target_outline=True, tree_logs=args.tree_logs,
                    move_over_attack=args.move_over_attack)
    out = trace(policy, goal, args.scale, env, [500 + i for i in range(args.episodes)], args.steps)
    print(json.dumps({"prompt": args.prompt, "scale": args.scale, **out}, indent=1))


if __name__ == "__main__":
    main()
