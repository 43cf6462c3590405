"""Evaluation rollout throughput: one guided forward pass for n lockstep episodes vs the world's step time.

    OMP_NUM_THREADS=1 python benchmarks/bench_eval.py --reps 30

The loop of `steve1_ray.evaluate.run.play_episodes` without the metrics: n streams (episodes) of the debug
policy with classifier-free guidance (2 rows each) answered in one `act_batch`, plus n crafter steps.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from steve1_ray.agent import act_batch, new_stream
from steve1_ray.models.policy import build_policy
from steve1_ray.world import make_env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--preset", default="debug")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    policy = build_policy(args.preset).eval()
    env = make_env("crafter")
    t = time.perf_counter()
    env.reset(seed=1)
    reset_s = time.perf_counter() - t
    povs = []
    t = time.perf_counter()
    for i in range(args.reps):
        obs, _, _, _ = env.step({"forward": int(i % 4 == 0), "attack": int(i % 4 == 1), "left": int(i % 4 == 2)})
        povs.append(obs["pov"])
    env_ms = (time.perf_counter() - t) / args.reps * 1000
    print(f"world: reset {reset_s:.2f} s, step {env_ms:.1f} ms")
    print("| episodes per worker | one guided forward (ms) | episode steps/s per worker |\n|---|---|---|")
    for n in args.streams:
        goal_dim = policy.cfg.embed_dim
        streams = [new_stream(policy, np.random.default_rng(i).normal(size=goal_dim).astype(np.float32), 6.0, seed=i)
                   for i in range(n)]
        act_batch(policy, streams, [povs[0]] * n)
        t = time.perf_counter()
        for i in range(args.reps):
            act_batch(policy, streams, [povs[i]] * n)
        fwd_ms = (time.perf_counter() - t) / args.reps * 1000
        print(f"| {n} | {fwd_ms:.0f} | {n / ((fwd_ms + n * env_ms) / 1000):.1f} |")


if __name__ == "__main__":
    main()
