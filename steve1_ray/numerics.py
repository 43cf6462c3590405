"""Which CPU kernels torch, MKL and oneDNN use, so that training repeats across x86-64 machines.

The three libraries pick their kernels by the CPU they start on. A CPU with AVX-512 rounds some sums differently
from one with AVX2 only, and a training run diverges from its first epoch: the release's world embedder, re-run on an
AVX-512 machine, had epoch 1's train loss 1.99623 where the committed file's history (made on an AVX2 machine) has
2.00168; with the AVX2 kernels pinned the same machine repeats that history digit for digit (benchmarks/RESULTS.md,
session 41). `pin_cpu_isa("avx2")` pins them for this process and every process it starts (a local Ray cluster's
workers inherit the environment). It must run before torch's first operation: the kernels are chosen then, once.
"""
from __future__ import annotations

import os
from pathlib import Path

# the libraries' own switches: torch's ATen kernels, MKL's BLAS, oneDNN's convolutions
ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
CPU_ISAS = ("", *ISA_ENV)


class CpuIsaError(ValueError):
    """The kernels cannot be pinned as asked in this process."""


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo is missing or has none (e.g. not x86)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def pin_cpu_isa(isa: str, cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """Pin the kernels to `isa` ("avx2"; "" leaves the machine's best) and return torch's CPU capability after.

    A CPU without AVX2 keeps its own kernels (a warning says the numbers will differ). Refuses a conflicting
    setting already in the environment, and a process whose torch has chosen other kernels already."""
    if isa not in CPU_ISAS:
        raise CpuIsaError(f"cpu_isa={isa!r}: choose one of {list(CPU_ISAS)}")
    import torch

    if not isa:
        return torch.backends.cpu.get_cpu_capability()
    if isa not in cpu_flags(cpuinfo):
        print(f"warning: cpu_isa={isa}: this CPU has no {isa.upper()}, so its own kernels run and the numbers will "
              "differ from the committed files'", flush=True)
        return torch.backends.cpu.get_cpu_capability()
    for key, value in ISA_ENV[isa].items():
        have = os.environ.get(key)
        if have is not None and have.lower() != value.lower():
            raise CpuIsaError(f"cpu_isa={isa} needs {key}={value}, but the environment sets {key}={have}")
        os.environ[key] = value
    got = torch.backends.cpu.get_cpu_capability()
    if got.lower() != isa:
        raise CpuIsaError(f"cpu_isa={isa}: torch chose its {got} kernels in this process before the pin; start "
                           f"the process with " + " ".join(f"{k}={v}" for k, v in ISA_ENV[isa].items()))
    return got
