"""Host memory of the tensor-heavy processes: keep freed memory for the next step instead of giving it back.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh `mmap` and returns it
with `munmap` when freed, and trims the heap's free top back to the OS. A training step at the 2x preset allocates
and frees gigabytes of activations and gradients, so every step faults its memory in again page by page, the
kernel zeroing each page first: on the 2-core CPU box that was about a third of the step (benchmarks/RESULTS.md,
session 21: 10.1-10.7 s per step with glibc's defaults, 7.4 s with these settings, on the same model and batch).

`reuse_freed_memory()` sets two `mallopt` options at run time (equivalent to the environment variables
`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>`, which only act at process start): no mmap for large blocks
(they come from the heap, and a freed block is reused by the next step's allocation of the same size) and no
trimming. The price: the process keeps its peak heap (its RSS does not fall between steps); a worker that runs
steps until it exits is the case it is for. Linux with glibc only; elsewhere it does nothing and says so.

The training workers (train/loop.py) call it unless `TrainConfig.reuse_freed_memory` is false. (A library
allocator, jemalloc or tcmalloc through LD_PRELOAD, does the same, but needs a system package and a preload in
every Ray worker's environment; two mallopt calls need neither.)
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_BYTES = 2**62
"""the trim threshold: larger than any heap, so the heap's free top is never given back"""

_applied: dict = {}


def reuse_freed_memory() -> dict:
    """Apply the settings once per process; returns {'applied': bool, 'reason': str}."""
    if _applied:
        return dict(_applied)
    if not sys.platform.startswith("linux"):
        _applied.update(applied=False, reason=f"not Linux ({sys.platform})")
        return dict(_applied)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as exc:  # musl and other libcs: no mallopt
        _applied.update(applied=False, reason=f"no glibc mallopt ({exc})")
        return dict(_applied)
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt takes an int: the largest trim threshold it can hold
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, min(KEEP_BYTES, 2**31 - 1)) == 1
    _applied.update(applied=ok, reason="mallopt" if ok else "mallopt refused the settings")
    return dict(_applied)
