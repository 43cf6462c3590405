"""Embedded-world speed: env steps/s, demonstrator cost, recording frames/s and episodes/s per core.

    OMP_NUM_THREADS=1 python benchmarks/bench_world.py --steps 600 --episode-steps 500 --write benchmarks/results/world.md

Times are CPU seconds of this process (time.process_time), i.e. per core, so they hold on a busy machine;
wall-clock numbers are printed beside them. Single process, single thread.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crafter import engine  # noqa: E402

from steve1_ray.world.crafter_env import CrafterEnv  # noqa: E402
from steve1_ray.world.demonstrators import Demonstrator  # noqa: E402
from steve1_ray.world.recorder import record_episode  # noqa: E402

KEYS = ["forward", "back", "left", "right", "attack"]


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    n = fn()
    return n, time.process_time() - c, time.perf_counter() - w


def bench_env(steps: int, crafter_view: bool = False, **env_kwargs) -> tuple[float, float, tuple]:
    """Steps/s of env.step alone (resets after a death are not timed). `crafter_view`: draw frames with crafter's
    own LocalView loop (one numpy call per tile and per creature) instead of ours (one gather), for comparison."""
    env = CrafterEnv(max_steps=10**6, **env_kwargs)
    if crafter_view:
        view = env._core._local_view
        view.__class__ = type("CrafterLoopView", (type(view),), {"__call__": engine.LocalView.__call__})
    rng = np.random.default_rng(0)
    env.reset(0)
    cpu = wall = 0.0
    seed = 0
    for _ in range(steps):
        action = {KEYS[rng.integers(len(KEYS))]: 1}
        w, c = time.perf_counter(), time.process_time()
        _, _, done, _ = env.step(action)
        cpu, wall = cpu + time.process_time() - c, wall + time.perf_counter() - w
        if done:
            seed += 1
            env.reset(seed)
    return steps / cpu, steps / wall, env.frame_size


def bench_reset(n: int, again: bool = False) -> float:
    """CPU seconds per reset of a new world (generation), or (`again`) of a world played before (remembered)."""
    env = CrafterEnv()
    seeds = [10**6 + s for s in range(n)]
    if again:
        [env.reset(s) for s in seeds]
    _, cpu, _ = _timed(lambda: [env.reset(s) for s in seeds])
    return cpu / n


def bench_demo(steps: int) -> tuple[float, float]:
    """Steps/s of demonstrator.act + env.step (resets not timed)."""
    env = CrafterEnv(max_steps=10**6, zombie_rate=0.2)
    seed = 0
    env.reset(seed)
    demo = Demonstrator(env, seed=seed)
    demo.reset()
    cpu = wall = 0.0
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        _, _, done, _ = env.step(demo.act())
        cpu, wall = cpu + time.process_time() - c, wall + time.perf_counter() - w
        if done:
            seed += 1
            env.reset(seed)
            demo.reset()
    return steps / cpu, steps / wall


def bench_record(episode_steps: int, episodes: int) -> dict:
    frames = cpu = wall = 0.0
    with tempfile.TemporaryDirectory() as d:
        for i in range(episodes):
            rec = record_episode(d, f"bench-{i}", seed=100 + i, max_steps=episode_steps,
                                 env_kwargs={"zombie_rate": 0.2})
            frames += rec.n_frames
            cpu += rec.cpu_seconds
            wall += rec.seconds
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs if f.endswith(".mp4"))
    return {"frames": frames, "cpu": cpu, "wall": wall, "episodes": episodes, "mp4_bytes": size}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=600, help="env steps per env/demonstrator measurement")
    p.add_argument("--episode-steps", type=int, default=500, help="max_steps of each recorded episode")
    p.add_argument("--episodes", type=int, default=2, help="recorded episodes")
    p.add_argument("--write", default=None, help="write a markdown table here")
    args = p.parse_args(argv)

    rows = []
    for label, kw in [("env step, 640x360 (tile 20, scaled 2x) [default]", {}),
                      ("env step, 640x360, crafter's per-tile LocalView loop (before 3560260)", {"crafter_view": True}),
                      ("env step, 320x180 (tile 20, no scaling)", {"frame_size": (320, 180)}),
                      ("env step, 640x360 rendered directly (tile 40)", {"tile_px": 40})]:
        cpu_rate, wall_rate, _ = bench_env(args.steps, **kw)
        rows.append((label, f"{cpu_rate:.0f} steps/s", f"{wall_rate:.0f} steps/s"))
        print(rows[-1], flush=True)
    reset_s = bench_reset(3)
    rows.append(("env reset, a new world (generation)", f"{reset_s * 1000:.0f} ms", ""))
    again_s = bench_reset(3, again=True)
    rows.append(("env reset, a world played before (remembered, 7a82bb7)", f"{again_s * 1000:.1f} ms", ""))
    cpu_rate, wall_rate = bench_demo(args.steps)
    rows.append(("env step + demonstrator (zombie_rate 0.2)", f"{cpu_rate:.0f} steps/s", f"{wall_rate:.0f} steps/s"))
    print(rows[-1], flush=True)
    r = bench_record(args.episode_steps, args.episodes)
    rows.append(("recording (env reset + demonstrator + H.264 + jsonl)", f"{r['frames'] / r['cpu']:.0f} frames/s",
                 f"{r['frames'] / r['wall']:.0f} frames/s"))
    per_ep = r["cpu"] / r["episodes"]
    rows.append((f"recorded episodes/s per core ({args.episode_steps}-step episodes)",
                 f"{1 / per_ep:.3f} ep/s ({per_ep:.1f} CPU-s/ep)", ""))
    rows.append(("1000-step episodes/s per core (extrapolated)",
                 f"{1 / (reset_s + 1000 * r['cpu'] / r['frames']):.3f} ep/s", ""))
    rows.append(("mp4 size", f"{r['mp4_bytes'] / r['frames'] / 1024:.1f} KiB/frame", ""))
    print(rows[-4:], flush=True)

    table = ["| measurement | per core (CPU time) | wall clock |", "|---|---|---|"]
    table += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = "\n".join(table)
    print(text)
    if args.write:
        cmd = "OMP_NUM_THREADS=1 python benchmarks/bench_world.py " + " ".join(argv if argv is not None else sys.argv[1:])
        header = (f"# World (embedded crafter) speed\n\nCommand: `{cmd}`\n\nMachine: {platform.processor() or platform.machine()}, "
                  f"{os.cpu_count()} cores shared with other jobs (load varies), Python {platform.python_version()}. "
                  "CPU time is per core; wall clock depends on the load.\n\n")
        with open(args.write, "w") as f:
            f.write(header + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
