"""Dataset-generation speed, measured side by side in one run (results go to benchmarks/results/data.md).

1. decode + convert frames/s on one core: PyAV decode of a 640x360 H.264 episode, actions, cursor,
   both resizes (what one `convert_episode` task does per frame, JPEG encoding included);
2. embedding throughput: cached per-frame features vs the original per-window method (same model,
   same frames, same device) as steady-state embedded frames/s (frames/time for the cached method,
   windows/time for the per-window one; on a long episode windows ~ frames), and their max difference;
3. shard bytes/frame and read+decode frames/s of each frame codec, on embedded-world (crafter) frames.

    OMP_NUM_THREADS=1 python benchmarks/bench_data.py [--preset debug|attn] [--frames 300] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def bench_convert(folder: Path, n: int) -> dict:
    from steve1_ray.data import shards
    from steve1_ray.data.contractor import iter_kept_frames, read_actions
    from steve1_ray.data.synthetic import write_episode

    write_episode(folder / "ep", n, seed=0)
    best = None
    for _ in range(2):
        t0 = time.perf_counter()
        actions = read_actions(folder / "ep" / "actions.jsonl")
        frames = []
        kept = 0
        for _, frame, _mc in iter_kept_frames(folder / "ep" / "video.mp4", actions, expected_resolution=(640, 360)):
            frames.append(frame)
            kept += 1
        shards.encode_frames(np.stack(frames), "jpeg", 95)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return {"lines": n, "kept": kept, "seconds": best, "lines_per_s": n / best, "kept_per_s": kept / best}


def bench_embed(preset: str, n: int, device: str) -> dict:
    import torch

    from steve1_ray.data.embed import window_embeds, window_embeds_per_window
    from steve1_ray.models.loading import load_embedder

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = load_embedder(preset, device=device)
    frames = np.random.default_rng(0).integers(0, 256, (n, 160, 256, 3), dtype=np.uint8)
    window_embeds(model, frames[:20])  # warm-up
    t0 = time.perf_counter()
    cached, _ = window_embeds(model, frames, frame_batch=32)
    t_cached = time.perf_counter() - t0
    t0 = time.perf_counter()
    per_window, _ = window_embeds_per_window(model, frames, window_batch=4)
    t_window = time.perf_counter() - t0
    # Steady-state throughput, i.e. embedded frames per second on a long episode (where windows ~ frames):
    # the cached method costs one ViT pass + one pooling per frame, the per-window method 16 ViT passes +
    # one pooling per window. So: frames / time for the first, windows / time for the second.
    cached_fps, window_fps = n / t_cached, (n - 15) / t_window
    return {"preset": preset, "device": device, "frames": n, "windows": n - 15,
            "cached_s": t_cached, "per_window_s": t_window,
            "cached_fps": cached_fps, "per_window_fps": window_fps, "speedup": cached_fps / window_fps,
            "max_abs_diff": float(np.abs(cached - per_window).max())}


def world_frames(n: int) -> np.ndarray:
    """(n, 128, 128, 3) policy frames of the embedded world (crafter at 640x360, random walk)."""
    import crafter

    env = crafter.Env(size=(640, 360), seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        obs, _, done, _ = env.step(int(rng.integers(0, env.action_space.n)))
        if done:
            obs = env.reset()
        out.append(cv2.resize(obs, (128, 128), interpolation=cv2.INTER_LINEAR))
    return np.stack(out)


def bench_codecs(folder: Path, frames: np.ndarray) -> list[dict]:
    from steve1_ray.data import shards

    n = len(frames)
    rows = []
    for codec, quality in (("jpeg", 95), ("jpeg", 90), ("png", 0), ("raw", 0)):
        root = folder / f"{codec}{quality}"
        store = shards.Store(root)
        zeros = np.zeros(n)
        t0 = time.perf_counter()
        blobs = shards.encode_frames(frames, codec, quality or 95)
        t_enc = time.perf_counter() - t0
        table = shards.segment_table("ep", 0, 0, blobs, zeros, zeros, zeros, np.zeros((n, 2)),
                                     np.zeros((n, 512)), np.zeros(n, bool), codec)
        entry = shards.write_segment(store, table)
        store.write_json("index/ep.json", {"episode_id": "ep", "n_frames": n, "segments": [entry]})
        t0 = time.perf_counter()
        back = shards.load_episode(root, "ep", columns=["frames"])["frames"]
        t_dec = time.perf_counter() - t0
        err = np.abs(back.astype(np.int16) - frames).astype(np.float64)
        psnr = 10 * np.log10(255 ** 2 / max((err ** 2).mean(), 1e-12))
        rows.append({"codec": f"{codec} q{quality}" if codec == "jpeg" else codec,
                     "frame_bytes": sum(map(len, blobs)) / n, "file_bytes_per_frame": entry["bytes"] / n,
                     "encode_fps": n / t_enc, "read_decode_fps": n / t_dec,
                     "psnr_db": psnr if err.max() > 0 else float("inf"), "max_err": int(err.max())})
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="debug", help="MineCLIP preset for the embedding comparison")
    p.add_argument("--embed_frames", type=int, default=120)
    p.add_argument("--frames", type=int, default=400, help="lines of the decode/convert episode")
    p.add_argument("--codec_frames", type=int, default=500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="also write the Markdown table here")
    args = p.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        conv = bench_convert(tmp, args.frames)
        emb = bench_embed(args.preset, args.embed_frames, args.device)
        codecs = bench_codecs(tmp, world_frames(args.codec_frames))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
             f"{load:.1f} at the end; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, cv2 1 thread.", "",
             "| decode + convert (1 core) | value |", "|---|---|",
             f"| jsonl lines (= video frames) decoded per s | {conv['lines_per_s']:.1f} |",
             f"| kept frames per s (after null dropping; both resizes + JPEG) | {conv['kept_per_s']:.1f} |", "",
             f"| embedding (MineCLIP `{emb['preset']}`, {emb['device']}, {emb['frames']} frames = "
             f"{emb['windows']} windows) | value |",
             "|---|---|",
             f"| cached per-frame features: embedded frames/s ({emb['frames']} frames in "
             f"{emb['cached_s']:.1f} s) | {emb['cached_fps']:.3f} |",
             f"| per-window (original): embedded frames/s ({emb['windows']} windows in "
             f"{emb['per_window_s']:.1f} s) | {emb['per_window_fps']:.3f} |",
             f"| speed-up | {emb['speedup']:.1f}x |",
             f"| max abs difference (fp32) | {emb['max_abs_diff']:.2e} |", "",
             f"| frame codec ({args.codec_frames} crafter frames 128x128) | image bytes/frame | shard file bytes/frame"
             " (all columns, D=512 zeros) | encode frames/s | read + decode frames/s | PSNR dB | max err |",
             "|---|---|---|---|---|---|---|"]
    for r in codecs:
        lines.append(f"| {r['codec']} | {r['frame_bytes']:.0f} | {r['file_bytes_per_frame']:.0f} | "
                     f"{r['encode_fps']:.0f} | {r['read_decode_fps']:.0f} | {r['psnr_db']:.1f} | {r['max_err']} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
