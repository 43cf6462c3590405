"""The GPU check: on one GPU in under 8 minutes, the three numbers a GPU machine is lent to measure.

    bash benchmarks/gpu_check.sh                                 # one GPU -> benchmarks/results/gpu_check.{json,md}
    bash benchmarks/gpu_check.sh --cpu-dry-run --out /tmp/gc     # tiny sizes on CPU in < 60 s (the test suite's run)

1. train: optimizer steps of the 2x policy in bf16 at the paper's batch shape (configs/train/paper.yaml: 12
   sequences x trunc_t 64 x grad_accum 4 = 3,072 frames per step), `bench_train.bench_model`; frames/s, and MFU
   = FLOPs of one step as counted by torch's FlopCounterMode (forward + backward of every micro-batch) x steps/s
   / the device's peak dense bf16 FLOP/s (PEAK_TFLOPS by `torch.cuda.get_device_name`, or --peak-tflops).
2. serve: the Serve app with the 2x policy on the GPU, 16 / 64 / 256 concurrent HTTP sessions stepping JPEG
   frames through `steve1_ray.client` (`bench_serve.served`); actions/s, latency p50/p99, the largest batch.
3. mineclip: MineCLIP `attn` embedding under fp16 autocast (the original's), per-frame cached (ours) and
   per-window (STEVE-1's), episode frames/s (`bench_mineclip.main`).

Each section runs in its own process with a hard time budget (killed when it runs over; its error is recorded and
the other sections still run); the JSON and the Markdown table are rewritten after every section. Random weights
throughout: speed does not depend on the values. `--cpu-dry-run` runs the same code paths at tiny sizes on CPU
(debug presets, bf16 autocast, a nominal peak for the MFU) so the check never rots.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SECTIONS = ("train", "serve", "mineclip")

# Peak dense (no sparsity) bf16 tensor-core TFLOP/s from the vendors' datasheets, keyed by
# torch.cuda.get_device_name(). A device not listed gets no MFU unless --peak-tflops gives its peak.
PEAK_TFLOPS = {
    "NVIDIA H200": 989.0,                 # H200 SXM
    "NVIDIA H200 NVL": 835.0,
    "NVIDIA H100 80GB HBM3": 989.0,       # H100 SXM
    "NVIDIA H100 PCIe": 756.0,
    "NVIDIA H100 NVL": 835.0,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA L40S": 362.0,
}
DRY_RUN_PEAK_TFLOPS = 1.0  # the dry run's stand-in, so that the MFU arithmetic runs; not a real peak

# What each mode measures. GPU: the paper's shapes; the dry run: the same paths at the debug presets' size.
SIZES = {
    "gpu": {
        "device": "cuda",
        "train": {"overrides": [], "steps": 20, "max_seconds": 60.0},
        "serve": {"policy": "2x", "sessions": [16, 64, 256], "steps": 30, "max_batch_size": 64,
                  "state_sync_every": 20},
        "mineclip": {"preset": "attn", "frames": 1024, "batch": 16, "frame_batch": 256, "dtype": "fp16",
                     "repeats": 2},
        # hard budgets: 425 s, plus at most 10 s to stop each section that overruns: < 8 minutes in all
        "budget_s": {"train": 150, "serve": 200, "mineclip": 75},
    },
    "cpu-dry-run": {
        "device": "cpu",
        "train": {"overrides": ["model=debug", "batch_size=2", "T=16", "trunc_t=8", "grad_accum=2"], "steps": 2,
                  "max_seconds": 5.0},
        "serve": {"policy": "debug", "sessions": [1, 2], "steps": 3, "max_batch_size": 4, "state_sync_every": 1},
        "mineclip": {"preset": "debug", "frames": 18, "batch": 2, "frame_batch": 8, "dtype": "bf16", "repeats": 1},
        "budget_s": {"train": 120, "serve": 150, "mineclip": 120},  # backstops on a loaded machine, not targets
    },
}


T_START = time.time()


def say(section: str, msg: str) -> None:
    """A progress line: [gpu_check/<section> +seconds since this process started] msg."""
    print(f"[gpu_check{'/' + section if section else ''} +{time.time() - T_START:.0f}s] {msg}", flush=True)


def peak_tflops(device_name: str, override: float | None, dry_run: bool) -> tuple[float | None, str]:
    """(peak TFLOP/s or None, where it came from)."""
    if override:
        return override, "--peak-tflops"
    if device_name in PEAK_TFLOPS:
        return PEAK_TFLOPS[device_name], f"PEAK_TFLOPS[{device_name!r}]: dense bf16, datasheet"
    if dry_run:
        return DRY_RUN_PEAK_TFLOPS, "nominal: CPU dry run, not a peak"
    return None, f"no peak known for {device_name!r}: pass --peak-tflops, its dense bf16 peak, for an MFU"


# ------------------------------------------------------------------------------------------- sections
# Each runs in its own process and returns a dict of plain numbers and strings.

def device_info(device: str) -> dict:
    import torch

    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device visible to torch: run on the GPU machine, or pass --cpu-dry-run")
        return {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    return {"device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
            "torch": torch.__version__}


def section_train(sizes: dict, args, deadline: float) -> dict:
    """2x (paper preset) optimizer steps: frames/s, counted FLOPs per step, MFU."""
    import bench_train
    from steve1_ray.train.config import load_train_config

    dev = sizes["device"]
    info = device_info(dev)
    import torch

    cfg = load_train_config("paper", sizes["train"]["overrides"])  # the paper's batch shape and precision
    torch.backends.cudnn.benchmark = bool(args.train_cudnn_benchmark)
    say("train", f"{cfg.model} {cfg.precision}, B {cfg.batch_size} x trunc_t {cfg.trunc_t} x grad_accum "
                 f"{cfg.grad_accum} on {info['device']}: build, warm up, count FLOPs, time")
    r = bench_train.bench_model(cfg.model, cfg.batch_size, cfg.trunc_t, cfg.precision, dev, sizes["train"]["steps"],
                                512, grad_accum=cfg.grad_accum, count_flops=True,
                                max_seconds=min(sizes["train"]["max_seconds"], max(1.0, deadline - time.time() - 15)),
                                profile_ops=args.train_profile)
    peak, source = peak_tflops(info["device"], args.peak_tflops, args.cpu_dry_run)
    achieved = r["flops_per_step"] * r["steps_per_s"]
    out = {**info, "preset": cfg.model, "precision": cfg.precision, "batch_size": cfg.batch_size,
           "trunc_t": cfg.trunc_t, "grad_accum": cfg.grad_accum,
           "cudnn_benchmark": bool(args.train_cudnn_benchmark), **r,
           "achieved_tflops": achieved / 1e12, "peak_tflops": peak, "peak_source": source,
           "mfu": achieved / (peak * 1e12) if peak else None}
    say("train", f"{r['frames_per_s']:,.1f} frames/s over {r['steps']} steps, {fmt_flops(r['flops_per_step'])}"
                 f"/step counted, MFU {fmt_pct(out['mfu'])}")
    return out


def section_serve(sizes: dict, args, deadline: float) -> dict:
    """The Serve app on the device: actions/s at each session count."""
    import bench_serve

    s = sizes["serve"]
    info = device_info(sizes["device"])
    sargs = bench_serve.build_parser().parse_args(
        ["--policy", s["policy"], "--device", sizes["device"], "--max-batch-size", str(s["max_batch_size"]),
         "--state-sync-every", str(s["state_sync_every"]), "--api-replicas", str(args.serve_api_replicas),
         "--batch-size-rule", args.serve_batch_rule,
         "--sessions", *map(str, s["sessions"])])
    frames = bench_serve.world_frames(16)
    say("serve", f"starting Ray + the Serve app ({s['policy']} on {sizes['device']})")
    url, serve = bench_serve.start_app(sargs)
    runs = []
    try:
        bench_serve.served(frames, 2, 3, url, None)  # warm-up: replicas, prompt cache, first batches
        for i, n in enumerate(s["sessions"]):
            share = (deadline - 15 - time.time()) / (len(s["sessions"]) - i)  # 15 s kept to shut down
            r = bench_serve.served(frames, n, s["steps"], url, None, deadline=time.perf_counter() + 0.8 * share)
            runs.append({"sessions": n, **r})
            say("serve", f"{n} sessions: {r['actions_per_s']:,.1f} actions/s, p50 {r['p50_ms']:.0f} ms, "
                         f"p99 {r['p99_ms']:.0f} ms, largest batch {r['max_batch']}")
    finally:  # the cluster is this process's own (bench_serve.start_app): stopping Ray stops the app with it
        import ray

        ray.shutdown()
    return {**info, "policy": s["policy"], "max_batch_size": s["max_batch_size"],
            "api_replicas": args.serve_api_replicas, "batch_size_rule": args.serve_batch_rule,
            "state_sync_every": s["state_sync_every"], "steps_per_session": s["steps"], "runs": runs}


def section_mineclip(sizes: dict, args, deadline: float) -> dict:
    """MineCLIP embedding frames/s under autocast: per-frame cached vs per-window."""
    import bench_mineclip

    m = sizes["mineclip"]
    info = device_info(sizes["device"])
    say("mineclip", f"{m['preset']} {m['dtype']}, {m['frames']} frames on {info['device']}")
    rows = bench_mineclip.main(["--preset", m["preset"], "--frames", str(m["frames"]), "--batch-size",
                                str(m["batch"]), "--frame-batch", str(m["frame_batch"]), "--device",
                                sizes["device"], "--dtype", m["dtype"], "--repeats", str(m["repeats"]),
                                "--threads", "1"])
    win, cached = rows
    return {**info, "preset": m["preset"], "dtype": m["dtype"], "frames": m["frames"],
            "window_batch": m["batch"], "frame_batch": m["frame_batch"],
            "cached_frames_per_s": cached["frames_per_s"], "per_window_frames_per_s": win["frames_per_s"],
            "speedup": cached["frames_per_s"] / win["frames_per_s"], "max_abs_diff": cached["max_abs_diff"]}


def run_in_this_process(args) -> int:
    """The child side: run one section, write its result (or its error) as JSON to --result."""
    sys.path[:0] = [str(HERE), str(REPO)]
    sizes = SIZES["cpu-dry-run" if args.cpu_dry_run else "gpu"]
    if sizes["device"] == "cpu":
        import torch

        torch.set_num_threads(1)  # tiny sizes: one thread is as fast, and robust on a shared machine
    deadline = time.time() + budget_of(args, args.section)
    fn = {"train": section_train, "serve": section_serve, "mineclip": section_mineclip}[args.section]
    try:
        out = {"ok": True, **fn(sizes, args, deadline)}
    except BaseException as exc:  # noqa: BLE001 - recorded, and the other sections still run
        traceback.print_exc()
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    Path(args.result).write_text(json.dumps(out, indent=1))
    return 0 if out["ok"] else 1


# ------------------------------------------------------------------------------------------- the parent

def budget_of(args, section: str) -> float:
    given = getattr(args, f"{section}_budget_s")
    return given if given is not None else SIZES["cpu-dry-run" if args.cpu_dry_run else "gpu"]["budget_s"][section]


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group (the section and the Ray processes it started), SIGKILL after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def run_section(section: str, argv: list[str], budget_s: float, tmp: str) -> dict:
    """Run one section in a child process (its own process group, so Ray's processes go with it); kill it
    when it runs past `budget_s`."""
    result = Path(tmp, f"{section}.json")
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv, "--section", section,
                             "--result", str(result)], start_new_session=True)
    try:
        rc = proc.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        return {"ok": False, "wall_s": time.time() - t0,
                "error": f"killed after its budget of {budget_s:g} s (--{section}-budget-s to change it)"}
    except BaseException:  # Ctrl-C: the child is in its own session and would not get it
        stop_group(proc)
        raise
    try:
        out = json.loads(result.read_text())
    except (OSError, ValueError):
        out = {"ok": False, "error": f"the section's process exited with code {rc} without a result (its output "
                                     "is above)"}
    out["wall_s"] = time.time() - t0  # the whole process: start, imports, measurement, shutdown
    return out


def fmt_flops(x: float) -> str:
    """12.3 TFLOP, 1.82 GFLOP, ..."""
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} FLOP"


def fmt_pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def markdown(report: dict) -> str:
    s = report["sections"]
    lines = [f"# GPU check ({report['mode']})", "",
             f"`{report['command']}` at {report['started']}, commit {report['commit']}; device "
             f"{report.get('device', '?')}, torch {report.get('torch', '?')}; {report['wall_s']:.0f} s in all.",
             "Random weights (speed does not depend on them); each section ran in its own process under a hard "
             "time budget.", "",
             "| section | setup | result | wall s |", "|---|---|---|---:|"]
    for name, r in s.items():
        if not r.get("ok"):
            lines.append(f"| {name} | - | **failed**: {r.get('error', '?')} | {r.get('wall_s', 0):.0f} |")
        elif name == "train":
            lines.append(
                f"| train | `{r['preset']}` {r['precision']}, B {r['batch_size']} x trunc_t {r['trunc_t']} x "
                f"grad_accum {r['grad_accum']} = {r['frames_per_step']:,} frames/step, {r['params_M']:.1f}M "
                f"parameters{', cudnn.benchmark' if r.get('cudnn_benchmark') else ''} | "
                f"**{r['frames_per_s']:,.1f} frames/s** ({r['steps_per_s']:.3f} steps/s over "
                f"{r['steps']} steps); {fmt_flops(r['flops_per_step'])}/step counted (FlopCounterMode, "
                f"fwd+bwd), {fmt_flops(r['achieved_tflops'] * 1e12)}/s; **MFU {fmt_pct(r['mfu'])}** of "
                f"{format(r['peak_tflops'], 'g') if r['peak_tflops'] else '?'} TFLOP/s ({r['peak_source']})"
                + (f"; peak {r['peak_cuda_gb']:.1f} GB CUDA" if "peak_cuda_gb" in r else "")
                + f" | {r['wall_s']:.0f} |")
        elif name == "serve":
            for k, run in enumerate(r["runs"]):
                setup = (f"`{r['policy']}` served over HTTP (JPEG 640x360, `steve1_ray.client`), "
                         f"max_batch_size {r['max_batch_size']}, state_sync_every {r['state_sync_every']}, "
                         f"{r.get('api_replicas', 1)} Api replica(s), batch_size_rule "
                         f"{r.get('batch_size_rule', 'auto')}: "
                         if k == 0 else "") + f"{run['sessions']} sessions"
                wall = f"{r['wall_s']:.0f}" if k == 0 else ""
                lines.append(f"| {'serve' if k == 0 else ''} | {setup} | **{run['actions_per_s']:,.1f} actions/s**; "
                             f"p50 {run['p50_ms']:.0f} ms, p99 {run['p99_ms']:.0f} ms; largest batch "
                             f"{run['max_batch']} | {wall} |")
        elif name == "mineclip":
            lines.append(f"| mineclip | `{r['preset']}` {r['dtype']} autocast, {r['frames']} frames, per-frame "
                         f"cached (ours) / per-window (STEVE-1's) | **{r['cached_frames_per_s']:,.1f}** / "
                         f"{r['per_window_frames_per_s']:,.1f} episode frames/s ({r['speedup']:.1f}x); max "
                         f"difference {r['max_abs_diff']:.1e} | {r['wall_s']:.0f} |")
    ops = s.get("train", {}).get("top_ops")
    if ops:
        lines += ["", "One training step profiled (torch.profiler), the operators with the most self time on the "
                      "device:", "", "| operator | calls | self ms | share |", "|---|---:|---:|---:|"]
        lines += [f"| `{o['op']}` | {o['calls']} | {o['self_ms']:.1f} | {100 * o['share']:.1f} % |" for o in ops]
    return "\n".join(lines) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on CPU (< 60 s): checks every code path")
    p.add_argument("--out", default=None, help="folder for gpu_check.json and gpu_check.md (default: "
                                               "benchmarks/results; with --cpu-dry-run a temporary folder)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak dense bf16 TFLOP/s for the MFU (default: PEAK_TFLOPS by device name)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--serve-batch-rule", default="auto", choices=["auto", "sessions", "fixed"],
                   help="the PolicyServer's batch_size_rule in the serve section (auto: fixed on CUDA)")
    p.add_argument("--train-profile", type=int, default=0, metavar="N",
                   help="also profile one training step and report its N operators with the most device time")
    p.add_argument("--train-cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark = True in the train section (cuDNN picks conv algorithms)")
    p.add_argument("--serve-api-replicas", type=int, default=1,
                   help="replicas of the served app's Api ingress in the serve section (default 1)")
    for name in SECTIONS:
        p.add_argument(f"--{name}-budget-s", type=float, default=None,
                       help=f"hard time limit of the {name} section (default: GPU "
                            f"{SIZES['gpu']['budget_s'][name]} s, dry run {SIZES['cpu-dry-run']['budget_s'][name]} s)")
    p.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)  # the child side
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.section:
        return run_in_this_process(args)
    mode = "cpu-dry-run" if args.cpu_dry_run else "gpu"
    out_dir = Path(args.out or (Path(tempfile.gettempdir(), "gpu_check_dry_run") if args.cpu_dry_run
                                else REPO / "benchmarks" / "results"))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:  # STEVE1_COMMIT: where the machine's copy carries an older .git (gpu_prepare.sh writes it to COMMIT)
        commit = os.environ.get("STEVE1_COMMIT") or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    t0 = time.time()
    report = {"mode": mode, "command": "bash benchmarks/gpu_check.sh " + " ".join(argv), "commit": commit,
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
              "sections_run": args.sections, "budget_s": {s: budget_of(args, s) for s in args.sections},
              "sections": {}, "wall_s": 0.0}
    say("", f"{mode}: sections {', '.join(args.sections)}; hard budgets "
            + ", ".join(f"{s} {b:g} s" for s, b in report["budget_s"].items()) + f"; results -> {out_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        for section in args.sections:
            say("", f"{section}: start")
            r = run_section(section, argv, report["budget_s"][section], tmp)
            report["sections"][section] = r
            for key in ("device", "torch"):
                if key in r and key not in report:
                    report[key] = r[key]
            report["wall_s"] = time.time() - t0
            say("", f"{section}: {'done' if r.get('ok') else 'FAILED: ' + r.get('error', '?')} "
                    f"in {r.get('wall_s', 0):.0f} s")
            (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
            (out_dir / "gpu_check.md").write_text(markdown(report))
    print(markdown(report), flush=True)
    say("", f"wrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'} ({report['wall_s']:.0f} s)")
    return 0 if all(r.get("ok") for r in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
