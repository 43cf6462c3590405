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
DEFAULT_CPU_ISA = "avx2"  # every `steve1` command's, and the committed files' (made on an AVX2 machine)


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


def pinned_env() -> dict[str, str]:
    """The pin's variables as this process has them (for the workers of a cluster it joins); empty without a pin."""
    keys = {k for env in ISA_ENV.values() for k in env}
    return {k: os.environ[k] for k in sorted(keys) if k in os.environ}


def has_isa(isa: str, cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU runs `isa`'s kernels: /proc/cpuinfo's flags (ATen's own AVX2 needs FMA too), else torch's
    probe where there is no /proc/cpuinfo (macOS, Windows); the probe does not fix torch's choice of kernels."""
    flags = cpu_flags(cpuinfo)
    if flags:
        return isa in flags and "fma" in flags
    import torch

    return bool(getattr(torch.cpu, f"_is_{isa}_supported", lambda: False)())


def pin_cpu_isa(isa: str, cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """Pin the kernels to `isa` ("avx2"; "" leaves the machine's best) and return torch's CPU capability after.

    A CPU without AVX2 keeps its own kernels (a warning says the numbers will differ). Refuses a conflicting
    setting already in the environment, and a process whose torch has chosen other kernels already."""
    if isa not in CPU_ISAS:
        raise CpuIsaError(f"cpu_isa={isa!r}: choose one of {list(CPU_ISAS)}")
    import torch

    if not isa:
        return torch.backends.cpu.get_cpu_capability()
    if not has_isa(isa, cpuinfo):
        print(f"warning: cpu_isa={isa}: could not find {isa.upper()} on this CPU, so its own kernels run and the "
              "numbers will differ from the committed files'", flush=True)
        return torch.backends.cpu.get_cpu_capability()
    for key, value in ISA_ENV[isa].items():  # all checked before any is set
        have = os.environ.get(key)
        if have is not None and have.lower() != value.lower():
            raise CpuIsaError(f"cpu_isa={isa} needs {key}={value}, but the environment sets {key}={have}: unset it, "
                              f"or pass cpu_isa= to run with the environment's setting")
    before = {k: os.environ.get(k) for k in ISA_ENV[isa]}
    os.environ.update(ISA_ENV[isa])
    got = torch.backends.cpu.get_cpu_capability()
    if got.lower() != isa:
        for k, v in before.items():  # leave the environment as it was: later subprocesses must not inherit half a pin
            if v is None:
                os.environ.pop(k, None)
        raise CpuIsaError(f"cpu_isa={isa}: torch chose its {got} kernels in this process before the pin; start "
                          f"the process with " + " ".join(f"{k}={v}" for k, v in ISA_ENV[isa].items())
                          + ", or pass cpu_isa= to run the machine's own")
    return got
