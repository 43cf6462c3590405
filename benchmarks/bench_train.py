"""Training throughput: the data loader's frames/s against the model's, and whole Ray Train runs per worker count.

    python benchmarks/bench_train.py                         # debug preset, CPU, 0/1/2 workers
    python benchmarks/bench_train.py --presets debug 2x --precision bf16 --workers 1 --device cuda

1. loader: `Prefetcher` over a shard dataset (JPEG decode + relabeling), frames/s per thread count.
2. model: `optimizer_step` (forward + backward + AdamW on one trunc_t piece of B sequences) on in-memory batches,
   frames/s and peak memory (process RSS on CPU, `max_memory_allocated` on CUDA).
3. ray: `run_training` on the synthetic dataset with num_workers = 0 (local mode), 1, 2; frames/s from the run's
   own log (mean of the logged windows after the first) and peak RSS per worker.
Prints a Markdown table; `--out FILE` also writes it.

    python benchmarks/bench_train.py --vs-original --presets 2x --batch_size 2 --trunc_t 16 --rounds 3

`--vs-original`: the original's training step (forward on a trunc_t piece with the carried state, the summed
log-likelihood loss, backward, clip_grad_norm_ 5.0, fused AdamW, as STEVE-1's loop does) in fp32 and in bf16
autocast (its launch line's `--mixed_precision bf16`), beside the project's `optimizer_step` in fp32, bf16 autocast
and (`--variants ... fp32+ckpt`) fp32 with activation checkpointing, on the same model size and batch, interleaved
step by step (round-robin, each round starting one variant later) so that a noisy machine loads every variant
alike; each project step is compared with the original in fp32 and in its own precision, and each variant's first
loss with fp32's on the same weights and batch. Every variant holds its model and AdamW state (at 2x about 4 GB).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def bench_loader(root: str, T: int, batch_size: int, threads: int, n_batches: int) -> dict:
    from steve1_ray.train.data import MultiSource, Prefetcher, SequenceDataset

    src = MultiSource([root])
    ds = SequenceDataset(src, src.episode_ids(), T, 15, 40, 0.1, seed=0)
    batches = [list(range(i * batch_size, (i + 1) * batch_size)) for i in range(min(n_batches, len(ds) // batch_size))]
    loader = Prefetcher(ds, threads, ahead=4)
    for _ in loader.iter_batches(batches[:1], 0):
        pass
    t = time.perf_counter()
    n = sum(b["img"].shape[0] * b["img"].shape[1] for b in loader.iter_batches(batches, 1))
    dt = time.perf_counter() - t
    loader.close()
    return {"frames_per_s": n / dt, "frames": n}


def bench_model(preset: str, batch_size: int, trunc_t: int, precision: str, device: str, steps: int,
                embed_dim: int, grad_accum: int = 1, count_flops: bool = False,
                max_seconds: float | None = None, profile_ops: int = 0) -> dict:
    """Optimizer steps of `preset` on one in-memory batch: `grad_accum` micro-batches of B x trunc_t frames each.

    `count_flops`: one extra step (after the warm-up, not timed) under torch's FlopCounterMode gives
    `flops_per_step`, the matmul/conv FLOPs of forward + backward of every micro-batch as counted by torch.
    `max_seconds`: stop timing after this long (at least one step); `steps` counts the steps timed.
    `profile_ops`: one more step (after the timing) under torch.profiler gives `top_ops`, the operators with the
    most self time on the device (CUDA kernels' time on a GPU, CPU time on CPU), that many of them.
    """
    from steve1_ray.models.policy import build_policy
    from steve1_ray.train.config import TrainConfig
    from steve1_ray.train.step import optimizer_step
    from steve1_ray.train.optim import build_optimizer, freeze_parts

    dev = torch.device(device)
    torch.manual_seed(0)
    policy = build_policy(preset, embed_dim=embed_dim).to(dev).train()
    freeze_parts(policy, [])
    opt = build_optimizer(policy, 1e-4, 0.039428)
    cfg = TrainConfig(model=preset, T=trunc_t * 2, trunc_t=trunc_t, batch_size=batch_size, grad_accum=grad_accum,
                      precision=precision, min_btwn_goals=15, max_btwn_goals=40)
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
    batch = {"img": torch.randint(0, 256, (batch_size, cfg.T, 128, 128, 3), dtype=torch.uint8),
             "goal_embed": torch.randn(batch_size, cfg.T, embed_dim),
             "first": torch.zeros(batch_size, cfg.T, dtype=torch.bool),
             "buttons": torch.randint(0, 8641, (batch_size, cfg.T)), "camera": torch.randint(0, 121, (batch_size, cfg.T))}
    batch["first"][:, 0] = True
    micro_batches = [batch] * grad_accum  # the same frames in every micro-batch: the work is the same
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    states = [policy.initial_state(batch_size, device=dev) for _ in micro_batches]

    def step(k: int) -> None:
        optimizer_step(policy, policy, opt, scaler, micro_batches, states, (k % 2) * trunc_t, cfg, dev, 1e-4)

    step(0)  # warm-up
    out = {}
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step(1)
        out["flops_per_step"] = counter.get_total_flops()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t = time.perf_counter()
    done = 0
    for k in range(steps):
        step(k)
        done += 1
        if max_seconds is not None and time.perf_counter() - t > max_seconds:
            break
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    dt = time.perf_counter() - t
    frames_per_step = batch_size * trunc_t * grad_accum
    out.update({"frames_per_s": done * frames_per_step / dt, "steps_per_s": done / dt, "steps": done,
                "frames_per_step": frames_per_step,
                "params_M": sum(p.numel() for p in policy.parameters()) / 1e6,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2})
    if dev.type == "cuda":
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated(dev) / 1024**3
    if profile_ops:
        out["top_ops"] = profile_step(lambda: step(0), dev, profile_ops)
    return out


def profile_step(run, dev: torch.device, n: int) -> list[dict]:
    """The `n` operators with the most self time in one call of `run` (torch.profiler): name, calls, self ms,
    share of the step's total self time; device (kernel) time on CUDA, CPU time on CPU."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        run()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    rows = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    total = sum(getattr(e, key) for e in rows) or 1.0
    rows.sort(key=lambda e: -getattr(e, key))
    return [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key) / 1000, "share": getattr(e, key) / total}
            for e in rows[:n]]


VARIANTS = ("original", "fp32", "original-bf16", "bf16", "fp32+ckpt", "fp32-whole", "bf16-whole", "original-again",
            "fp32-glibc", "original-reuse", "original-bf16-reuse")
"""--vs-original's variants: the original's step in fp32 and in bf16 (its launch line's precision), and the
project's step in fp32, bf16, fp32 with activation checkpointing, and fp32 / bf16 with the ImpalaCNN on all of a
piece's frames in one pass (`-whole`, as before session 19; the project's steps run it CPU_FRAME_CHUNK frames at a
time on CPU, the original's in one pass, as VPT's). Each holds a model with its AdamW state (at 2x about 4 GB), so
pick a few on a small machine; the original in fp32 always runs (the reference). `original-again` is a second,
identical copy of the original's fp32 step: how far two equal steps differ in one run is the noise floor of every
other ratio (sessions 14-19 reported a 0.70-0.79x gap between the project's and the original's one-pass steps that
an equal copy, measured later, also showed). With separate processes (the default) the project's steps run in a
process started with `steve1_ray.hostmem.worker_env()`, as the trainer's workers are (`TrainConfig.
reuse_freed_memory`), and the original's with glibc's defaults, as its script runs; `fp32-glibc` is the project's
fp32 step with glibc's defaults, `original-reuse` / `original-bf16-reuse` the original's with the project's
setting (like for like). In one process (`--same-process`) every variant has glibc's defaults."""

NAMES = {"original": "original step (fp32, fused AdamW)",
         "original-bf16": "original step (bf16 autocast, its launch line)",
         "fp32": "project optimizer_step fp32",
         "bf16": "project optimizer_step bf16 autocast",
         "fp32+ckpt": "project optimizer_step fp32 + activation checkpointing",
         "fp32-whole": "project optimizer_step fp32, the CNN on all frames at once",
         "bf16-whole": "project optimizer_step bf16 autocast, the CNN on all frames at once",
         "original-again": "original step again (fp32, an equal copy: the noise floor)",
         "fp32-glibc": "project optimizer_step fp32, glibc malloc defaults (no reuse_freed_memory)",
         "original-reuse": "original step (fp32) in a process with the project's reuse_freed_memory",
         "original-bf16-reuse": "original step (bf16 autocast) in a process with the project's reuse_freed_memory"}


def reuses_memory(key: str) -> bool:
    """Whether a variant's process starts with the project's malloc setting (hostmem.worker_env)."""
    return key.endswith("-reuse") or not (key.startswith("original") or key == "fp32-glibc")


def make_variant(key: str, preset: str, batch_size: int, trunc_t: int, embed_dim: int):
    """The step function of one --vs-original variant, built from seed 0 (the same weights and batch in every
    variant and process): step(k) runs piece k % 2 of the batch and returns the loss."""
    from steve1_ray.models.policy import build_policy, detach_state, logprob
    from steve1_ray.train.config import TrainConfig
    from steve1_ray.train.optim import build_optimizer, enable_activation_checkpointing, freeze_parts
    from steve1_ray.train.step import optimizer_step

    dev = torch.device("cpu")
    torch.manual_seed(0)
    policy = build_policy(preset, embed_dim=embed_dim).train()
    T = trunc_t * 2
    g = torch.Generator().manual_seed(1)
    batch = {"img": torch.randint(0, 256, (batch_size, T, 128, 128, 3), dtype=torch.uint8, generator=g),
             "goal_embed": torch.randn(batch_size, T, embed_dim, generator=g),
             "first": torch.zeros(batch_size, T, dtype=torch.bool),
             "buttons": torch.randint(0, 8641, (batch_size, T), generator=g),
             "camera": torch.randint(0, 121, (batch_size, T), generator=g)}
    batch["first"][:, 0] = True

    if key.startswith("original"):
        # The original's step; bf16 as its launch line runs it (`accelerate --mixed_precision bf16`: the model's
        # forward under bf16 autocast, its outputs back in fp32, fp32 master weights, no scaler)
        bf16 = key.startswith("original-bf16")
        policy.net.img_process.cnn.cpu_chunk = 0  # VPT's ImpalaCNN runs all of a piece's frames in one pass
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=0.039428, fused=True)
        state = [policy.initial_state(batch_size)]

        def step(k):
            sl = slice((k % 2) * trunc_t, (k % 2 + 1) * trunc_t)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                lp, new = policy(batch["img"][:, sl], batch["goal_embed"][:, sl], batch["first"][:, sl], state[0])
            lp = {k: v.float() for k, v in lp.items()} if isinstance(lp, dict) else lp.float()
            loss = -logprob(lp, batch["buttons"][:, sl], batch["camera"][:, sl]).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 5.0)
            opt.step()
            state[0] = detach_state(new)
            return float(loss.detach())
        return step

    precision = "bf16" if key.startswith("bf16") else "fp32"
    policy.net.img_process.cnn.chunk_with_grad = not key.endswith("-whole")  # False: all frames at once
    freeze_parts(policy, [])
    if key == "fp32+ckpt":
        enable_activation_checkpointing(policy)
    opt = build_optimizer(policy, 1e-4, 0.039428)
    cfg = TrainConfig(model=preset, T=T, trunc_t=trunc_t, batch_size=batch_size, grad_accum=1,
                      precision=precision, min_btwn_goals=15, max_btwn_goals=40)
    states = [policy.initial_state(batch_size)]

    def step(k):
        return optimizer_step(policy, policy, opt, None, [batch], states, (k % 2) * trunc_t, cfg, dev, 1e-4)["loss_sum"]
    return step


class VariantProcess:
    """One variant in a process of its own (`bench_train.py --variant-worker`), stepped over a pipe: each program
    as it runs alone (its own heap and allocator settings: `reuses_memory`)."""

    def __init__(self, key: str, preset: str, batch_size: int, trunc_t: int, embed_dim: int):
        import subprocess

        from steve1_ray.hostmem import worker_env

        env = {**os.environ, **(worker_env() if reuses_memory(key) else {})}
        if not reuses_memory(key):
            env.pop("GLIBC_TUNABLES", None)
        self.key = key
        self.proc = subprocess.Popen([sys.executable, __file__, "--variant-worker", key, "--presets", preset,
                                      "--batch_size", str(batch_size), "--trunc_t", str(trunc_t),
                                      "--embed-dim", str(embed_dim)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        ready = self._read()
        if ready != f"ready {int(reuses_memory(key))}":
            self.close()
            raise RuntimeError(f"variant {key}: expected 'ready {int(reuses_memory(key))}', got {ready!r}")

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"variant {self.key}: its process exited with {self.proc.wait()} (its stderr is above)")
        return line.strip()

    def __call__(self, k: int) -> tuple[float, float]:
        try:
            self.proc.stdin.write(f"{k}\n")
        except BrokenPipeError:
            raise RuntimeError(f"variant {self.key}: its process exited with {self.proc.wait()}") from None
        seconds, loss = self._read().split()
        return float(seconds), float(loss)

    def close(self) -> None:
        import subprocess

        try:
            self.proc.stdin.close()
        except OSError:  # it died: nothing to tell it
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def variant_worker(key: str, preset: str, batch_size: int, trunc_t: int, embed_dim: int) -> int:
    """The child side of VariantProcess: build, answer "ready <1 if started with the project's malloc setting>",
    then "<seconds> <loss>" per step number read. The protocol has its own copy of stdout; file descriptor 1 (what
    native libraries print) goes to stderr."""
    from steve1_ray.hostmem import started_with_reuse

    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    step = make_variant(key, preset, batch_size, trunc_t, embed_dim)
    print(f"ready {int(started_with_reuse())}", file=proto, flush=True)
    for line in sys.stdin:
        t = time.perf_counter()
        loss = step(int(line))
        print(f"{time.perf_counter() - t} {loss}", file=proto, flush=True)
    return 0


def timed(step):
    """step(k) -> loss as VariantProcess's call: k -> (seconds, loss)."""
    def run(k: int) -> tuple[float, float]:
        t = time.perf_counter()
        loss = step(k)
        return time.perf_counter() - t, loss
    return run


def vs_original(preset: str, batch_size: int, trunc_t: int, rounds: int, embed_dim: int = 512,
                which: tuple[str, ...] = VARIANTS, processes: bool = True) -> list[str]:
    """Rows of a Markdown table: frames/s of each training-step variant, measured round-robin; `processes`: each
    variant in a process of its own (VariantProcess), else all in this one (then no variant reuses freed memory)."""
    keys = list(dict.fromkeys(("original", *which)))
    variants = {}
    try:
        for k in keys:  # inside the try: a variant that fails to start closes those already started
            variants[NAMES[k]] = (VariantProcess(k, preset, batch_size, trunc_t, embed_dim) if processes else
                                  timed(make_variant(k, preset, batch_size, trunc_t, embed_dim)))
        first_loss = {name: step(0)[1] for name, step in variants.items()}  # warm-up; step 0 from the same weights
        times = {name: [] for name in variants}
        names = list(variants)
        for r in range(rounds):
            # each round starts one variant later, so that no variant always runs right after the same one (a
            # step's time depends on what ran before it: caches, freed and re-faulted pages)
            for name in names[r % len(names):] + names[:r % len(names)]:
                times[name].append(variants[name](r + 1)[0])
                print(f"round {r + 1}: {name} {times[name][-1]:.2f} s", flush=True)
    finally:
        for step in variants.values():
            if isinstance(step, VariantProcess):
                step.close()
    frames = batch_size * trunc_t
    ref = statistics.median(times[NAMES["original"]])
    ref_loss = first_loss.get(NAMES["fp32"], first_loss[NAMES["original"]])
    ref_bf16 = statistics.median(times[NAMES["original-bf16"]]) if NAMES["original-bf16"] in times else None
    # "same precision" compares with the original in glibc's defaults, as its script runs; the -reuse rows are
    # the like-for-like reference
    rows = [f"| variant | {preset}, B {batch_size} x trunc_t {trunc_t}: median s/step | frames/s | vs original fp32 | "
            "vs original, same precision | first loss (same weights and batch) | vs fp32 loss |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name in variants:
        med = statistics.median(times[name])
        same = ref_bf16 if "bf16" in name else ref
        rows.append(f"| {name} | {med:.2f} | {frames / med:.2f} | {ref / med:.2f}x | "
                    f"{'n/a' if same is None else f'{same / med:.2f}x'} | "
                    f"{first_loss[name]:.4f} | {(first_loss[name] - ref_loss) / abs(ref_loss):+.2e} |")
    return rows


def bench_ray(root: str, workers: int, n_frames: int, storage: str) -> dict:
    from steve1_ray.train.config import load_train_config
    from steve1_ray.train.run import run_training

    cfg = load_train_config("debug", [f"data={root}", f"num_workers={workers}", "T=32", "trunc_t=8",
                                      "batch_size=2", "grad_accum=1", f"n_frames={n_frames}", "warmup_frames=64",
                                      "log_every_steps=4", "val_every_steps=100000", "val_at_start=false",
                                      "checkpoint_every_steps=100000", f"storage_path={storage}",
                                      f"run_name=bench_w{workers}", "cpus_per_worker=0.5", "val_fraction=0.0"])
    t = time.perf_counter()
    result = run_training(cfg)
    wall = time.perf_counter() - t
    if result.error:
        raise RuntimeError(result.error)
    recs = [json.loads(l) for l in Path(cfg.resolved_tensorboard_dir(), "metrics.jsonl").read_text().splitlines()]
    rates = [r["train/frames_per_s"] for r in recs if "train/frames_per_s" in r][1:]
    return {"frames_per_s": statistics.mean(rates) if rates else float("nan"), "wall_s": wall,
            "peak_rss_gb_rank0": max(r.get("sys/rss_peak_gb", 0) for r in recs),
            "frames_per_step": cfg.frames_per_step}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["debug"])
    p.add_argument("--precision", nargs="+", default=["fp32"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--trunc_t", type=int, default=16)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--loader_threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--workers", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--ray_frames", type=int, default=512)
    p.add_argument("--vs-original", action="store_true", help="only the side-by-side step comparison (CPU)")
    p.add_argument("--rounds", type=int, default=3, help="--vs-original: timed steps per variant")
    p.add_argument("--variants", nargs="+", default=["original", "fp32", "original-bf16", "bf16"], choices=VARIANTS,
                   help="--vs-original: which steps (the original in fp32 always)")
    p.add_argument("--same-process", action="store_true",
                   help="--vs-original: every variant in this process (glibc's malloc defaults for all) instead of "
                        "one process each")
    p.add_argument("--variant-worker", default=None, help=argparse.SUPPRESS)  # VariantProcess's child
    p.add_argument("--embed-dim", type=int, default=512, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    if args.variant_worker:
        return variant_worker(args.variant_worker, args.presets[0], args.batch_size, args.trunc_t, args.embed_dim)
    if args.vs_original:
        lines = [f"Machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; load average "
                 f"{os.getloadavg()[0]:.1f} at start.", ""]
        for preset in args.presets:
            lines += vs_original(preset, args.batch_size, args.trunc_t, args.rounds,
                                 which=tuple(args.variants), processes=not args.same_process) + [""]
        text = "\n".join(lines)
        print(text)
        if args.out:
            Path(args.out).write_text(text)
        return 0

    from steve1_ray.train.synthetic import make_dataset

    lines = [f"Machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, device {args.device}; "
             f"load average {os.getloadavg()[0]:.1f} at start.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(os.path.join(tmp, "shards"), n_episodes=8, n_frames=160, embed_dim=512, seed=0)
        lines += ["| loader | threads | frames/s |", "|---|---|---|"]
        for th in args.loader_threads:
            r = bench_loader(root, 64, args.batch_size, th, 8)
            lines.append(f"| Prefetcher (JPEG 128x128, T=64, B={args.batch_size}) | {th} | {r['frames_per_s']:,.0f} |")
            print(lines[-1], flush=True)
        lines += ["", "| model | precision | B x trunc_t | params | train frames/s | peak memory |", "|---|---|---|---|---|---|"]
        for preset in args.presets:
            for prec in args.precision:
                r = bench_model(preset, args.batch_size, args.trunc_t, prec, args.device, args.steps, 512)
                mem = f"{r['peak_cuda_gb']:.2f} GB CUDA" if "peak_cuda_gb" in r else f"{r['peak_rss_gb']:.2f} GB RSS (process)"
                lines.append(f"| {preset} | {prec} | {args.batch_size} x {args.trunc_t} | {r['params_M']:.1f}M | "
                             f"{r['frames_per_s']:,.1f} | {mem} |")
                print(lines[-1], flush=True)
        if args.workers:
            import ray

            os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
            ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)
            lines += ["", "| Ray Train (debug preset, CPU, gloo) | workers | frames/step | train frames/s | fit wall s | peak RSS rank 0 |",
                      "|---|---|---|---|---|---|"]
            for w in args.workers:
                r = bench_ray(root, w, args.ray_frames, os.path.join(tmp, "runs"))
                lines.append(f"| T=32 trunc_t=8 B=2 | {w or '0 (local mode)'} | {r['frames_per_step']} | "
                             f"{r['frames_per_s']:,.1f} | {r['wall_s']:.1f} | {r['peak_rss_gb_rank0']:.2f} GB |")
                print(lines[-1], flush=True)
            ray.shutdown()
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
