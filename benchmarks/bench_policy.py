"""Policy throughput: forward and forward+backward frames/s and peak memory, per preset.

    python benchmarks/bench_policy.py --preset debug --batch 4 --time 16
    python benchmarks/bench_policy.py --preset 2x --batch 1 --time 4 --steps 2
    python benchmarks/bench_policy.py --preset 2x --device cuda --batch 12 --time 64 --amp bf16

Forward runs under no_grad (inference / serving); forward+backward runs the training step of the
original (sum over T of log p(buttons) + log p(camera), mean over B) with a carried, detached state.
Peak memory: process max RSS on CPU (monotonic, so it includes earlier phases), CUDA max allocated on GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import resource
import time

import torch

from steve1_ray.models.policy import build_policy, detach_state, logprob


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(preset: str, device: str, batch: int, time_len: int, steps: int, warmup: int, amp: str,
          checkpointing: bool) -> list[dict]:
    dev = torch.device(device)
    torch.manual_seed(0)
    policy = build_policy(preset, device=dev)
    policy.set_activation_checkpointing(checkpointing)
    cfg = policy.cfg
    img = torch.randint(0, 256, (batch, time_len, *cfg.img_shape), dtype=torch.uint8, device=dev)
    goal = torch.randn(batch, time_len, cfg.embed_dim, device=dev)
    first = torch.zeros(batch, time_len, dtype=torch.bool, device=dev)
    buttons = torch.randint(0, 8641, (batch, time_len), device=dev)
    camera = torch.randint(0, 121, (batch, time_len), device=dev)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def autocast():
        return torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    rows = []
    for mode in ("forward", "forward+backward"):
        policy.train(mode != "forward")
        state = policy.initial_state(batch)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for i in range(warmup + steps):
            _sync(dev)
            t0 = time.perf_counter()
            if mode == "forward":
                with torch.no_grad(), autocast():
                    _, state = policy(img, goal, first, state)
            else:
                with autocast():
                    lp, state = policy(img, goal, first, state)
                loss = -logprob(lp, buttons, camera).sum(1).mean()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                state = detach_state(state)
            _sync(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        sec = sum(times) / len(times)
        rows.append({"preset": preset, "device": device, "amp": amp, "B": batch, "T": time_len, "mode": mode,
                     "ckpt": checkpointing, "s/step": sec, "frames/s": batch * time_len / sec,
                     "peak_MiB": _peak_mb(dev)})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="debug", help="debug | 1x | 2x | 3x")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--time", type=int, default=16, help="chunk length T")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    ap.add_argument("--checkpointing", action="store_true", help="activation checkpointing per block")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = bench(args.preset, args.device, args.batch, args.time, args.steps, args.warmup, args.amp,
                 args.checkpointing)
    print("| preset | device | amp | B | T | mode | ckpt | s/step | frames/s | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['device']} | {r['amp']} | {r['B']} | {r['T']} | {r['mode']} | {r['ckpt']} "
              f"| {r['s/step']:.3f} | {r['frames/s']:.1f} | {r['peak_MiB']:.0f} |")
    return rows


if __name__ == "__main__":
    main()
