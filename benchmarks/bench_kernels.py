"""What the AVX2 pin costs: the released world policy's speed with `cpu_isa=avx2` against the machine's own kernels.

    python benchmarks/bench_kernels.py [--rounds 3] [--batch 16] [--seconds 20]

Each round runs both settings, one after the other, each in a fresh interpreter (the kernels are chosen once per
process): the pin's three variables set (`steve1_ray.numerics.ISA_ENV`), or all three unset. Each measures, on the
released `steve1.model` + `steve1.weights`, (1) acting: one frame for `--batch` streams with a carried state, as an
evaluation worker or a served replica steps (no_grad), and (2) training: forward+backward+AdamW on `--batch`
sequences of 16 frames. Prints frames/s per setting and round, and the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from steve1_ray.numerics import ISA_ENV

CHILD = """
import json, sys, time, torch
from steve1_ray.models.formats import load_policy
from steve1_ray.models.policy import detach_state, logprob
from steve1_ray.release import RELEASED_DIR
torch.manual_seed(0)
batch, seconds = {batch}, {seconds}
policy = load_policy(RELEASED_DIR / "world" / "steve1.model", RELEASED_DIR / "world" / "steve1.weights")
cfg = policy.cfg

def inputs(t):
    return (torch.randint(0, 256, (batch, t, *cfg.img_shape), dtype=torch.uint8), torch.randn(batch, t, cfg.embed_dim),
            torch.zeros(batch, t, dtype=torch.bool))

def timed(step, frames):
    step()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:
        step()
        n += 1
    return n * frames / (time.perf_counter() - t0)

policy.eval()
img, goal, first = inputs(1)
state = [policy.initial_state(batch)]
def act():
    with torch.no_grad():
        _, state[0] = policy(img, goal, first, state[0])
acting = timed(act, batch)
policy.train()
img, goal, first = inputs(16)
buttons, camera = torch.randint(0, 8641, (batch, 16)), torch.randint(0, 121, (batch, 16))
opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
tstate = [policy.initial_state(batch)]
def train():
    lp, s = policy(img, goal, first, tstate[0])
    (-logprob(lp, buttons, camera).sum(1).mean()).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    tstate[0] = detach_state(s)
training = timed(train, batch * 16)
print(json.dumps({{"kernels": torch.backends.cpu.get_cpu_capability(), "acting": acting, "training": training}}))
"""


def run(pinned: bool, batch: int, seconds: float) -> dict:
    keys = set(ISA_ENV["avx2"])
    env = {k: v for k, v in os.environ.items() if k not in keys}
    if pinned:
        env.update(ISA_ENV["avx2"])
    out = subprocess.run([sys.executable, "-c", CHILD.format(batch=batch, seconds=seconds)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16, help="streams (acting) and sequences (training)")
    ap.add_argument("--seconds", type=float, default=20.0, help="per setting and round, split over the two modes")
    args = ap.parse_args(argv)
    results: dict[str, list[dict]] = {"own": [], "avx2": []}
    for r in range(args.rounds):
        for name in ("own", "avx2"):
            res = run(name == "avx2", args.batch, args.seconds)
            results[name].append(res)
            print(f"round {r + 1} {name:4s} ({res['kernels']}): acting {res['acting']:7.1f} frames/s, training "
                  f"{res['training']:6.1f} frames/s", flush=True)
    for mode in ("acting", "training"):
        own = statistics.median(x[mode] for x in results["own"])
        pin = statistics.median(x[mode] for x in results["avx2"])
        print(f"median {mode:8s}: own {own:7.1f}  avx2 {pin:7.1f} frames/s  (avx2 / own = {pin / own:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
