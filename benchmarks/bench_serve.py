"""Load test: N concurrent sessions against the served app vs the original's one-session-at-a-time loop.

    python benchmarks/bench_serve.py --sessions 1 4 16 --steps 30 --out benchmarks/results/serve.md

Served: a local Ray cluster + the Serve app (debug preset unless --policy/--weights), HTTP on 127.0.0.1;
N client threads, each with its own session, post JPEG frames (640x360 embedded-world frames) in a
bounded loop. Baseline: the original's inference loop in one process, one session at a time, two forward
passes per step (conditional, then unconditional) on the same frames, including JPEG decode and resize.
Reports actions/s and per-step latency p50/p99.

    python benchmarks/bench_serve.py --in-process-only --policy 2x --sessions 16 --threads 2 --precision fp32 bf16

`--in-process-only`: the original's loop beside `act_batch` in each `--precision` (no Ray, no HTTP), and for bf16
how far its guided log-probs and greedy actions are from fp32's on the same frames and states.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import cv2
import numpy as np


def world_frames(n: int, seed: int = 0) -> list[bytes]:
    """JPEG-encoded 640x360 frames from the embedded world under random actions."""
    from steve1_ray.world import make_env, noop_action

    env = make_env("crafter")
    obs = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(obs["pov"], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        out.append(data.tobytes())
        act = noop_action()
        act[["forward", "left", "right", "attack", "jump"][rng.integers(5)]] = 1
        obs, _, done, _ = env.step(act)
        if done:
            obs = env.reset(seed=seed + 1)
    return out


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1000, q))


def baseline(frames: list[bytes], steps: int, args) -> dict:
    """The original: one session, two batch-1 forwards per step (cond, uncond), sample, repeat."""
    import torch

    from steve1_ray import agent as A
    from steve1_ray.models.formats import load_policy

    torch.set_num_threads(args.threads)
    policy = load_policy(args.policy, args.weights).eval().to(args.device)
    goal = np.random.default_rng(0).normal(size=A.policy_embed_dim(policy)).astype(np.float32)
    stream = A.new_stream(policy, goal, 6.0, seed=0)
    lat = []
    for t in range(steps + 3):
        t0 = time.perf_counter()
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(frames[t % len(frames)], np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
        A.two_pass_step(policy, stream, img)
        if t >= 3:  # warm-up
            lat.append(time.perf_counter() - t0)
    return {"actions_per_s": len(lat) / sum(lat), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}


def inprocess_batched(frames: list[bytes], n: int, steps: int, args, precision: str = "fp32") -> dict:
    """The service's computation without HTTP: n sessions stepped together by `act_batch` in one process."""
    import torch

    from steve1_ray import agent as A
    from steve1_ray.models.formats import load_policy

    torch.set_num_threads(args.threads)
    policy = A.set_precision(load_policy(args.policy, args.weights).eval().to(args.device), precision)
    goal = np.random.default_rng(0).normal(size=A.policy_embed_dim(policy)).astype(np.float32)
    streams = [A.new_stream(policy, goal, 6.0, seed=i) for i in range(n)]
    lat = []
    for t in range(steps + 2):
        t0 = time.perf_counter()
        povs = [cv2.cvtColor(cv2.imdecode(np.frombuffer(frames[(t + i) % len(frames)], np.uint8),
                                          cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for i in range(n)]
        A.act_batch(policy, streams, povs)
        if t >= 2:
            lat.append(time.perf_counter() - t0)
    return {"actions_per_s": n * len(lat) / sum(lat), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "max_batch": n}


def precision_gap(frames: list[bytes], n: int, steps: int, args, precision: str) -> dict:
    """`precision` against fp32 on the same inputs: both step copies of the same n streams for `steps` steps, each
    from the fp32 run's states (teacher-forced), and compare the guided log-probs and their argmax per head."""
    import copy

    import torch

    from steve1_ray import agent as A
    from steve1_ray.models.formats import load_policy

    torch.set_num_threads(args.threads)
    policy = load_policy(args.policy, args.weights).eval().to(args.device)
    goal = np.random.default_rng(0).normal(size=A.policy_embed_dim(policy)).astype(np.float32)
    streams = [A.new_stream(policy, goal, 6.0, seed=i) for i in range(n)]
    worst, same, total = 0.0, 0, 0
    for t in range(steps):
        povs = [cv2.cvtColor(cv2.imdecode(np.frombuffer(frames[(t + i) % len(frames)], np.uint8),
                                          cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for i in range(n)]
        other = copy.deepcopy(streams)
        A.set_precision(policy, precision)
        _, low = A.act_batch(policy, other, povs, return_logits=True)
        A.set_precision(policy, "fp32")
        _, ref = A.act_batch(policy, streams, povs, return_logits=True)
        for h in A.HEADS:
            worst = max(worst, float((low[h] - ref[h]).abs().max()))
            same += int((low[h].argmax(-1) == ref[h].argmax(-1)).sum())
            total += low[h].shape[0]
    return {"max_abs_logit_diff": worst, "greedy_agreement": same / total, "steps": steps, "sessions": n}


def gpu_name(device: str) -> str:
    """', NVIDIA H200' when `device` is a CUDA device, else ''."""
    if not device.startswith("cuda"):
        return ""
    import torch

    return f", {torch.cuda.get_device_name(torch.device(device))}"


def inprocess_only(args) -> int:
    """The original's loop beside act_batch at each precision, one after the other in this process."""
    frames = world_frames(16)
    lines = [f"# In-process CFG stepping ({args.policy} preset, {args.device}, torch threads {args.threads})", "",
             f"Command: `python benchmarks/bench_serve.py --in-process-only --policy {args.policy} "
             f"--device {args.device} --sessions "
             f"{' '.join(map(str, args.sessions))} --threads {args.threads} --steps {args.steps} --baseline-steps "
             f"{args.baseline_steps} --precision {' '.join(args.precision)}"
             f"{' --glibc-malloc' if args.glibc_malloc else ''}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs{gpu_name(args.device)}. "
             + ("glibc's malloc defaults." if args.glibc_malloc else "Freed memory reused (steve1_ray/hostmem.py) "
                "in this process: by act_batch and by the original's loop alike."), "",
             "| setup | sessions | actions/s | p50 ms/step | p99 ms/step | original loop actions/s (measured just "
             "before) | vs original |", "|---|---:|---:|---:|---:|---:|---:|"]
    for n in args.sessions:
        for precision in args.precision:
            base = baseline(frames, args.baseline_steps, args)
            res = inprocess_batched(frames, n, args.steps, args, precision)
            lines.append(f"| act_batch {precision} | {n} | {res['actions_per_s']:.2f} | {res['p50_ms']:.0f} | "
                         f"{res['p99_ms']:.0f} | {base['actions_per_s']:.2f} | "
                         f"{res['actions_per_s'] / base['actions_per_s']:.2f}x |")
            print(lines[-1], flush=True)
    for precision in args.precision:
        if precision != "fp32":
            gap = precision_gap(frames, min(args.sessions), 4, args, precision)
            lines += ["", f"{precision} against fp32, same frames and states ({gap['sessions']} sessions x "
                      f"{gap['steps']} steps, guided logits at scale 6): largest |difference| "
                      f"{gap['max_abs_logit_diff']:.4f}, greedy action agreement {gap['greedy_agreement']:.1%} "
                      "(buttons and camera heads)."]
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def served(frames: list[bytes], n_sessions: int, steps: int, url: str, key: str | None,
           deadline: float | None = None, counters: bool = True) -> dict:
    """n_sessions client threads, each stepping its own session through `steve1_ray.client` (JPEG frames).

    `deadline` (a time.perf_counter() value): sessions stop stepping once it has passed (at least one timed step).
    `counters`: read the replica's batch counters from `/info` before and after; off with several PolicyServer
    replicas, where each `/info` answers from whichever replica it reaches.
    """
    from requests.adapters import HTTPAdapter

    from steve1_ray.client import Client

    api = Client(url, api_key=key, retries=0)  # an error answer fails the run, never hides in the latency
    api.http.mount("http://", HTTPAdapter(pool_maxsize=max(64, n_sessions * 2)))  # one connection per thread
    sessions = [api.session(prompt="chop down the tree", cond_scale=6.0, seed=i) for i in range(n_sessions)]
    start: dict = {}

    def window_opens():  # run by one thread once every session has taken its warm-up steps
        start.update(before=api.info() if counters else None, t=time.perf_counter())

    # the first two steps of each session warm up (replica caches, the session's first load, batches forming);
    # the timed window and the replica's counters start once every session is through them (until session 23
    # the counters also held the warm-up batches: a mean batch of 14.8 at 16 sessions was one split warm-up batch)
    warmed = threading.Barrier(n_sessions, action=window_opens, timeout=600)

    def play(i):
        lat = []  # (seconds, start, end) of each timed step
        for t in range(steps + 2):
            if t == 2:
                warmed.wait()
            t0 = time.perf_counter()
            sessions[i].act(frames[(t + i) % len(frames)])
            if t >= 2:
                lat.append((time.perf_counter() - t0, t0, time.perf_counter()))
                if deadline is not None and time.perf_counter() > deadline:
                    break
        return lat

    with cf.ThreadPoolExecutor(n_sessions) as pool:
        lats = [x for per in pool.map(play, range(n_sessions)) for x in per]
    info = api.info() if counters else None
    before, t_all = start["before"], time.perf_counter() - start["t"]  # the window of the replica's counters
    # actions/s over the timed steps only: from the first timed step's start to the last one's end (every timed
    # step lies inside; until session 19 the window also held the two warm-up steps, which understated the
    # rate by up to steps / (steps + 2), e.g. 0.75 at --steps 6)
    wall = max(end for _, _, end in lats) - min(start for _, start, _ in lats)
    for s in sessions:
        s.close()
    xs = [d for d, _, _ in lats]
    if not counters:
        nan = float("nan")
        return {"actions_per_s": len(xs) / wall, "p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99), "mean_batch": nan,
                "step_ms": nan, "store_ms": nan}
    batches = max(1, info["batches"] - before["batches"])
    # the replica's own time per batch (policy step; store claim + sync) against the client's cycle: the rest
    # of a cycle is the round trip (HTTP, the proxy, the Api, JPEG decode) and the batch wait
    return {"actions_per_s": len(xs) / wall, "p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99),
            "max_batch": info.get("max_batch"), "mean_batch": (info["steps"] - before["steps"]) / batches,
            "step_ms": 1000 * (info["step_s"] - before["step_s"]) / batches,
            "store_ms": 1000 * (info["claim_s"] + info["sync_s"] - before["claim_s"] - before["sync_s"]) / batches,
            # the replica's share of the run spent stepping, waiting for a batch to fill, and with no request
            "busy": (info["step_s"] - before["step_s"]) / t_all,
            "fill": (info.get("fill_s", 0.0) - before.get("fill_s", 0.0)) / t_all,
            "idle": (info.get("idle_s", 0.0) - before.get("idle_s", 0.0)) / t_all}


def shares(r: dict) -> str:
    """'62 / 20 / 3 %': the replica's time stepping, waiting for a batch to fill, and without requests."""
    return "-" if "busy" not in r else f"{100 * r['busy']:.0f} / {100 * r['fill']:.0f} / {100 * r['idle']:.0f} %"


def start_app(args, two_pass: bool = False) -> tuple[str, object]:
    """Start (or, with `two_pass`, redeploy as the original's one-at-a-time computation) the app."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    from steve1_ray.serving.app import build_app
    from steve1_ray.serving.config import ServeConfig
    from steve1_ray.serving.run import start_http

    if not ray.is_initialized():
        # address="local": a private cluster even when another one runs on this host (`ray start`)
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        start_http("127.0.0.1")  # a free port, picked again if another process takes it first
    port = _get_global_client().http_config.port
    max_sessions = max(64, max(args.sessions) * 2)
    cfg = ServeConfig(policy=args.policy, weights=args.weights, device=args.device, rollout_workers=0,
                      max_batch_size=1 if two_pass else args.max_batch_size, batch_wait_timeout_s=args.batch_wait,
                      max_sessions=max_sessions, max_sessions_per_key=max_sessions,  # one anonymous client
                      state_sync_every=args.state_sync_every, two_pass_baseline=two_pass,
                      sticky_sessions=not args.no_sticky, precision=args.precision[0],
                      # the two-pass baseline: one replica with the threads of the in-process baseline
                      torch_threads=args.threads if two_pass else args.torch_threads,
                      batch_wait_fraction=args.batch_wait_fraction, max_batch_wait_s=args.max_batch_wait,
                      batch_size_rule=args.batch_size_rule, batch_groups=args.batch_groups,
                      reuse_freed_memory=not args.glibc_malloc)
    # the two-pass baseline (the original's computation, one session at a time) on one replica
    serve.run(build_app(cfg, policy_options={"num_replicas": 1 if two_pass else args.policy_replicas},
                        api_options={"num_replicas": args.api_replicas}), name="steve1", route_prefix="/",
              logging_config={"enable_access_log": False, "log_level": "WARNING"})
    return f"http://127.0.0.1:{port}", serve


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--steps", type=int, default=30, help="steps per session (bounded loop)")
    p.add_argument("--baseline-steps", type=int, default=30)
    p.add_argument("--policy", default="debug")
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the baseline process")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batch-wait", type=float, default=0.005)
    p.add_argument("--batch-wait-fraction", type=float, default=0.3,
                   help="the batch wait grows to this fraction of a full batch's step (ServeConfig; 0 = fixed)")
    p.add_argument("--max-batch-wait", type=float, default=0.5,
                   help="ServeConfig.max_batch_wait_s: the longest the adapted wait gets")
    p.add_argument("--batch-size-rule", default="auto", choices=["auto", "sessions", "fixed"],
                   help="ServeConfig.batch_size_rule (auto: sessions on CPU, fixed on CUDA)")
    p.add_argument("--batch-groups", type=int, default=2,
                   help="ServeConfig.batch_groups: the active sessions step in this many groups in turn")
    p.add_argument("--api-replicas", type=int, default=1,
                   help="replicas of the Api ingress (JSON, base64, JPEG decode per request; one by default)")
    p.add_argument("--policy-replicas", type=int, default=1,
                   help="PolicyServer replicas (sessions spread over them by consistent hashing); with "
                        "--torch-threads 1, one replica per core steps without waiting on a preempted sibling thread")
    p.add_argument("--glibc-malloc", action="store_true",
                   help="glibc's malloc defaults in this process and the replicas (reuse_freed_memory off)")
    p.add_argument("--no-sticky", action="store_true", help="Serve's default router instead of consistent hashing")
    p.add_argument("--state-sync-every", type=int, default=1,
                   help="copy each session's state to the store every N steps (2x on a GPU: 20; docs/serving.md)")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch threads of the PolicyServer replica (ServeConfig.torch_threads; 0 = Ray's)")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="inference precision(s) of act_batch (in-process rows) and of the served policy (the first)")
    p.add_argument("--in-process-only", action="store_true",
                   help="only the original's loop beside act_batch at each --precision (no Ray, no HTTP)")
    p.add_argument("--out", default=None, help="write a Markdown table here")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.glibc_malloc:
        # as every PolicyServer replica is started (ServeConfig.reuse_freed_memory; here by mallopt, which
        # reaches this main thread): this process's act_batch rows are then the replica's in-process
        # counterpart; the original's loop in this process gets it too
        from steve1_ray.hostmem import reuse_freed_memory
        reuse_freed_memory()
    if args.in_process_only:
        return inprocess_only(args)

    frames = world_frames(16)
    url, serve = start_app(args)
    rows = []  # (setup, sessions, served result, in-process baseline measured just before it)
    try:
        served(frames, 2, 3, url, None)  # warm-up: replicas, prompt cache, first batches
        for n in args.sessions:
            # The machine is shared: measure the in-process baseline right before each served run, so
            # both see the same background load (the Serve replicas are idle meanwhile).
            base = baseline(frames, args.baseline_steps, args)
            res = served(frames, n, args.steps, url, None, counters=args.policy_replicas == 1)
            rows.append((f"served, batched CFG: {n} concurrent sessions", n, res, base))
            print(rows[-1], flush=True)
        for n in args.sessions:
            if n > 1:
                base = baseline(frames, args.baseline_steps, args)
                rows.append((f"in-process act_batch, no HTTP: {n} sessions", n,
                             inprocess_batched(frames, n, max(5, args.steps // 2), args), base))
                print(rows[-1], flush=True)
        # The same service doing the original's computation: one session at a time, two passes per step.
        start_app(args, two_pass=True)
        served(frames, 1, 3, url, None)
        base = baseline(frames, args.baseline_steps, args)
        res = served(frames, 1, args.steps, url, None, counters=args.policy_replicas == 1)
        for k in ("busy", "fill", "idle"):  # counters of a replica replaced by the redeployment: not shown
            res.pop(k, None)
        served_base = ("served, original two-pass, 1 session at a time", 1, res, base)
        print(served_base, flush=True)
    finally:
        serve.shutdown()
    lines = [f"# Serving load test ({args.policy} preset, {args.device})", "",
             f"Command: `python benchmarks/bench_serve.py --sessions {' '.join(map(str, args.sessions))} "
             f"--steps {args.steps} --baseline-steps {args.baseline_steps} --policy {args.policy} "
             f"--device {args.device} --threads {args.threads} --state-sync-every {args.state_sync_every} "
             f"--torch-threads {args.torch_threads} --precision {args.precision[0]} --max-batch-size {args.max_batch_size} "
             f"--batch-wait {args.batch_wait} --batch-wait-fraction {args.batch_wait_fraction} "
             f"--max-batch-wait {args.max_batch_wait} --batch-size-rule "
             f"{args.batch_size_rule} --batch-groups {args.batch_groups} --api-replicas {args.api_replicas} "
             f"--policy-replicas {args.policy_replicas}{' --glibc-malloc' if args.glibc_malloc else ''}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average at the end "
             f"{os.getloadavg()[0]:.1f}. Frames: 640x360 JPEG (q90) from the embedded "
             "world, sent base64 in JSON over HTTP on 127.0.0.1. Latency = one `act` request (client side).", "",
             "Baselines: (a) *in-process*: the original's loop in one process (torch threads "
             f"{args.threads}), one session, two batch-1 forwards per step, JPEG decode + resize included, "
             "measured right before each served run; (b) *served two-pass*: the same HTTP service with "
             "`two_pass_baseline=true max_batch_size=1`, one session at a time.", "",
             "Served rows: *mean batch* and the replica's own milliseconds per batch (*step*: the policy; *store*: "
             "the session store's claim + sync); the rest of a client's cycle is the round trip (HTTP, proxy, "
             "Api, JPEG decode) and the batch wait; *replica stepping / filling / idle*: its share of the run spent in the "
             "policy step, waiting for a batch to fill with requests waiting, and without any request. In-process "
             "rows: one `act_batch` call (p50).", "",
             "| setup | sessions | actions/s | p50 ms | p99 ms | largest batch | mean batch | step ms | store ms | "
             "replica stepping / filling / idle | "
             "vs served two-pass | the original's loop in process, actions/s (p50 / p99 ms) | vs the original's loop |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    sb = served_base[2]["actions_per_s"]
    for name, n, r, b in [served_base] + rows:
        lines.append(f"| {name} | {n} | {r['actions_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r.get('max_batch', '-')} | {r.get('mean_batch', n):.1f} | {r.get('step_ms', r['p50_ms']):.0f} | "
                     f"{r.get('store_ms', float('nan')):.0f} | {shares(r)} | {r['actions_per_s'] / sb:.2f}x | {b['actions_per_s']:.1f} "
                     f"({b['p50_ms']:.0f} / {b['p99_ms']:.0f}) | {r['actions_per_s'] / b['actions_per_s']:.2f}x |")
    inproc = {n: r["actions_per_s"] for name, n, r, _ in rows if name.startswith("in-process")}
    ratios = [f"{n} sessions {r['actions_per_s'] / inproc[n]:.2f}x" for name, n, r, _ in rows
              if name.startswith("served") and n in inproc]
    if ratios:
        lines += ["", "Served over HTTP / in-process `act_batch` at the same session count: " + ", ".join(ratios) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
