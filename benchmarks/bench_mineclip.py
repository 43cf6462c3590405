"""MineCLIP embedding throughput: per-frame-cached vs per-window (STEVE-1's way), side by side.

STEVE-1 embeds every 16-frame window of an episode (stride 1) with `encode_video`, so each frame
goes through the ViT 16 times. Caching per-frame features (`encode_frames` once per frame) and
sliding only the temporal pooling (`pool_features`) over them gives the same embeddings.

    python benchmarks/bench_mineclip.py --preset debug --frames 64
    python benchmarks/bench_mineclip.py --preset attn --frames 24 --threads 2

Reports episode frames embedded per second (one embedding per frame from index window-1 on) and the
largest difference between the two paths. `--out` appends a Markdown table row set to a file.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from steve1_ray.models.mineclip import MineCLIPConfig, load_mineclip


def per_window(model, frames: torch.Tensor, batch_size: int) -> torch.Tensor:
    """STEVE-1's path: encode_video on each window [t-15 .. t], batched."""
    w = model.window
    windows = frames.unfold(0, w, 1).permute(0, 4, 1, 2, 3)  # (N-w+1, w, H, W, 3) view
    return torch.cat([model.encode_video(windows[i:i + batch_size]) for i in range(0, windows.shape[0], batch_size)])


def per_frame_cached(model, frames: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Our path: per-frame features once, then temporal pooling over sliding windows of features."""
    w = model.window
    feats = model.encode_frames(frames, batch_size=batch_size)  # (N, D)
    windows = feats.unfold(0, w, 1).permute(0, 2, 1)  # (N-w+1, w, D)
    with torch.no_grad():
        return torch.cat([model.pool_features(windows[i:i + 256]) for i in range(0, windows.shape[0], 256)])


def autocast(device: str, dtype: str):
    """The dataset job's embedding precision (steve1_ray.data.embed): fp16/bf16 autocast on a GPU, bf16 on CPU,
    fp32 otherwise (the original embedded under CUDA fp16 autocast)."""
    from steve1_ray.data.embed import _autocast

    return _autocast(torch.device(device), dtype)


def timed(fn, *args, repeats: int = 1):
    """(best wall seconds, process CPU seconds of that run, output). CPU time is robust to a shared machine."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall, c = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, cpu = wall, c
    return best, cpu, out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="debug", choices=["debug", "attn"])
    p.add_argument("--frames", type=int, default=64, help="episode length N (>= window)")
    p.add_argument("--batch-size", type=int, default=8, help="windows (per-window) / frames (cached) per forward")
    p.add_argument("--frame-batch", type=int, default=None, help="frames per forward of the cached path "
                                                                  "(default: --batch-size)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="autocast precision as in the dataset job (fp16: GPU only, the original's)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default=None, help="append a Markdown table to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = load_mineclip(cfg=MineCLIPConfig.preset(args.preset), seed=0, device=args.device)
    if args.frames < model.window:
        p.error(f"--frames must be >= the window ({model.window})")
    rng = np.random.default_rng(0)
    # on the model's device from the start: the model is measured, not host-to-device copies
    frames = torch.from_numpy(rng.integers(0, 256, size=(args.frames, 160, 256, 3), dtype=np.uint8)).to(args.device)
    frame_batch = args.frame_batch or args.batch_size
    with autocast(args.device, args.dtype):
        model.encode_frames(frames[:2])  # warm-up
        t_win, c_win, e_win = timed(per_window, model, frames, args.batch_size, repeats=args.repeats)
        t_cache, c_cache, e_cache = timed(per_frame_cached, model, frames, frame_batch, repeats=args.repeats)
    n_embeds = args.frames - model.window + 1
    diff = float((e_win - e_cache).abs().max())
    rows = [dict(path=name, preset=args.preset, dtype=args.dtype, frames=args.frames, embeds=n_embeds, seconds=t,
                 cpu_seconds=c, frames_per_s=args.frames / t, frames_per_cpu_s=args.frames / c,
                 embeds_per_s=n_embeds / t, max_abs_diff=diff)
            for name, t, c in (("per-window (STEVE-1)", t_win, c_win), ("per-frame cached", t_cache, c_cache))]
    hw = f"{platform.processor() or platform.machine()}, {args.threads} thread(s), {args.device}, {args.dtype}"
    lines = [f"preset `{args.preset}`, N={args.frames} frames, window {model.window}, batch {args.batch_size} "
             f"windows / {frame_batch} frames, {hw}",
             "", "| path | wall s | CPU s | episode frames/s (wall) | frames per CPU-second | embeddings/s (wall) |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['path']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['frames_per_s']:.2f} | "
              f"{r['frames_per_cpu_s']:.2f} | {r['embeds_per_s']:.2f} |" for r in rows]
    lines += ["", f"speed-up {t_win / t_cache:.1f}x wall, {c_win / c_cache:.1f}x CPU; "
              f"max |difference| between paths {diff:.2e}", ""]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    main()
