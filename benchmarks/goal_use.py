"""Does a policy use a goal? Teacher-forced log-likelihood of the demonstrator's actions with and without it.

For each *task* episode of a recording (the scripted demonstrator preferred one goal for the whole episode,
docs/world.md), the policy replays the episode's first `--frames` frames (memory carried across them) four ways:
conditioned on that task's goal (prompt -> embedder -> prior at z = 0), on each of the other evaluated goals, and
on the zero goal (the unconditioned branch). Reported per task, in nats per step, averaged over its episodes:

    own - zero     > 0: the goal makes the demonstrator's actions more likely (the policy uses it)
    own - others   > 0: and more than the other prompts' goals do (it uses *this* goal, not "any goal")

In-sample: the task episodes are mostly in the policy's training split (a recording has few task episodes).

`--hindsight-horizon H` adds, for every episode of the recording (free play too), the gain of the goals the
training itself gave its frames (hindsight relabeling, `--min-btwn-goals`/`--max-btwn-goals` as the debug
preset, and event goals within H frames, the farthest; one draw, seed 0) over the zero goal: whether the policy
learned to use its own training goals at all, apart from how the prior's goals look.

    python benchmarks/goal_use.py --policy <checkpoint> --data <run>/shards --world <run>/world \\
        --embedder <run>/embedder/mineclip.pth --prior <run>/prior/prior.pt [--frames 300]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PROMPTS = {"collect_wood": "chop a tree", "collect_sapling": "collect a sapling", "collect_drink": "drink water",
           "eat_cow": "eat a cow", "place_table": "place a crafting table"}


def as_tensors(ep: dict) -> dict:
    """An episode's frames and actions as batch-of-one tensors (made once, replayed under every goal)."""
    import torch

    n = len(ep["buttons"])
    first = torch.zeros(1, n, dtype=torch.bool)
    first[0, 0] = True
    return {"img": torch.from_numpy(np.asarray(ep["frames"], np.uint8))[None], "first": first,
            "buttons": torch.from_numpy(np.asarray(ep["buttons"], np.int64))[None],
            "camera": torch.from_numpy(np.asarray(ep["camera"], np.int64))[None]}


def episode_logprob(policy, ep: dict, goal: np.ndarray, chunk: int = 32) -> float:
    """Sum over the episode's steps of log p(demonstrator's buttons, camera | frames so far, goal);
    `ep` from `as_tensors`."""
    import torch

    from steve1_ray.models.policy import logprob

    n = ep["buttons"].shape[1]
    state, total = policy.initial_state(1), 0.0
    g = torch.from_numpy(np.asarray(goal, np.float32))
    g = g.expand(1, n, -1) if g.ndim == 1 else g[None]  # one goal for the episode, or one per step
    for t0 in range(0, n, chunk):
        t1 = min(n, t0 + chunk)
        log_probs, state = policy(ep["img"][:, t0:t1], g[:, t0:t1], ep["first"][:, t0:t1], state)
        total += float(logprob(log_probs, ep["buttons"][:, t0:t1], ep["camera"][:, t0:t1]).sum())
    return total


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="checkpoint folder, or a .model with --weights")
    ap.add_argument("--weights", help="weights for a .model --policy (e.g. a release's steve1.weights)")
    ap.add_argument("--data", required=True, help="the shard dataset the recording was converted into")
    ap.add_argument("--world", required=True, help="the recording (its meta/*.json name each episode's task)")
    ap.add_argument("--embedder", required=True)
    ap.add_argument("--prior", required=True)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--hindsight-horizon", type=int, default=0, help="also the training's own goals (0: off)")
    ap.add_argument("--min-btwn-goals", type=int, default=15)
    ap.add_argument("--max-btwn-goals", type=int, default=40)
    args = ap.parse_args(argv)

    import torch

    from steve1_ray.data.shards import load_episode
    from steve1_ray.models.loading import load_embedder, load_policy_spec
    from steve1_ray.models.prior import load_prior

    torch.set_grad_enabled(False)
    policy = load_policy_spec(args.policy, args.weights, seed=0)
    embedder, prior = load_embedder(args.embedder), load_prior(args.prior).eval()
    goals = {t: prior.sample(embedder.encode_text([p]).float(), seed=0, deterministic=True).float().numpy()
             .reshape(-1) for t, p in PROMPTS.items()}
    zero = np.zeros(policy.cfg.embed_dim, np.float32)
    tasks = {}
    for meta in sorted(Path(args.world, "meta").glob("*.json")):
        m = json.loads(meta.read_text())
        if m.get("focus") in PROMPTS:
            tasks.setdefault(m["focus"], []).append(m["name"])
    rows = {}
    for task, names in tasks.items():
        own_zero, own_other = [], []
        for name in names:
            ep = as_tensors(load_episode(args.data, name, 0, args.frames, columns=["frames", "buttons", "camera"]))
            n = ep["buttons"].shape[1]
            lp = {t: episode_logprob(policy, ep, g) / n for t, g in goals.items()}
            lp0 = episode_logprob(policy, ep, zero) / n
            own_zero.append(lp[task] - lp0)
            own_other.append(lp[task] - np.mean([v for t, v in lp.items() if t != task]))
        rows[task] = {"prompt": PROMPTS[task], "episodes": len(names), "own_minus_zero": float(np.mean(own_zero)),
                      "own_minus_others": float(np.mean(own_other))}
        print(json.dumps({"task": task, **rows[task]}), flush=True)
    print("| task episodes | n | own goal − zero goal (nats/step) | own goal − other goals (nats/step) |")
    print("|---|---|---|---|")
    for task, r in rows.items():
        print(f"| {r['prompt']} | {r['episodes']} | {r['own_minus_zero']:+.3f} | {r['own_minus_others']:+.3f} |")
    if args.hindsight_horizon:
        hindsight(policy, args, zero)


def hindsight(policy, args, zero: np.ndarray) -> None:
    """Per task (and free play): mean over its episodes of log p with the training's goals − with the zero goal."""
    from steve1_ray.data.shards import load_episode
    from steve1_ray.train.data import MultiSource
    from steve1_ray.train.relabel import relabel

    source = MultiSource([args.data])
    keys = {k.rpartition("\t")[2]: k for k in source.episode_ids()}
    gains: dict[str, list[float]] = {}
    for meta in sorted(Path(args.world, "meta").glob("*.json")):
        m = json.loads(meta.read_text())
        key = keys.get(m["name"])
        if key is None:
            continue
        embeds, valid = source.embeds(key)
        n = min(len(embeds), args.frames)
        if n < args.min_btwn_goals + 16:
            continue
        goal, _, _ = relabel(embeds, valid, 0, n, args.min_btwn_goals, args.max_btwn_goals, 0.0,
                             np.random.default_rng(0), source.events(key), args.hindsight_horizon, "last")
        ep = as_tensors(load_episode(args.data, m["name"], 0, n, columns=["frames", "buttons", "camera"]))
        gain = (episode_logprob(policy, ep, goal) - episode_logprob(policy, ep, zero)) / n
        gains.setdefault(m.get("focus") or "free play", []).append(gain)
    print(f"\n| episodes | n | training's goals (events within {args.hindsight_horizon}) − zero goal (nats/step) |")
    print("|---|---|---|")
    for task, g in gains.items():
        print(f"| {PROMPTS.get(task, task)} | {len(g)} | {np.mean(g):+.3f} |")


if __name__ == "__main__":
    main()
