"""Host memory of the tensor-heavy workers: keep freed memory for the next step instead of giving it back.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh `mmap` and returns it
with `munmap` when freed, and trims the heap's free top back to the OS. A training step at the 2x preset allocates
and frees gigabytes of activations and gradients, so every step faults its memory in again page by page, the
kernel zeroing each page first: on the 2-core CPU box that was about a third of the step (benchmarks/RESULTS.md,
session 21: 10.1-10.7 s per step with glibc's defaults, 7.4 s without the refaults, same model and batch).

`worker_env()` is the cure for Ray workers: the environment variable `GLIBC_TUNABLES` with no mmap for large blocks
(they come from the heap, and a freed block is reused by the next allocation of its size), no trimming, and one
arena. It must be there when the process starts (glibc reads it once), so it goes into the workers' runtime_env:
the training workers' (train/run.py, `TrainConfig.reuse_freed_memory`), the PolicyServer replicas'
(`ServeConfig.reuse_freed_memory`, serving/serve_config.yaml) and the evaluation workers' (`EvalConfig`). One arena
because these workers compute in threads (Ray Train's training thread, Serve's executor thread, threaded actors):
a thread's own arena mmaps any block over its 64 MiB heap whatever `mmap_max` says, and unmaps a heap once it is
free, so without `arena_max=1` the setting does not reach them (tests/test_hostmem.py shows both).

`reuse_freed_memory()` sets the first two in the running process with `mallopt`, for code that steps on the main
thread (the benchmarks): it does not reach threads that already have an arena.

The price: a worker keeps its peak heap (its RSS does not fall between steps), and its threads share one arena's
lock. Linux with glibc only; elsewhere the variable is ignored and `reuse_freed_memory` says so. (jemalloc or
tcmalloc through LD_PRELOAD would do the same, but need a system package on every node.)
"""
from __future__ import annotations

import ctypes
import os
import sys

TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4611686018427387904:glibc.malloc.arena_max=1"
"""no mmap for large blocks, trim only above 4 EiB (never), one arena for every thread"""

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_applied: dict = {}


def worker_env(environ: dict | None = None) -> dict[str, str]:
    """{"GLIBC_TUNABLES": ...} for a Ray worker's runtime_env `env_vars`: ours after any the caller already has
    (glibc takes the last value of a tunable named twice)."""
    have = (os.environ if environ is None else environ).get("GLIBC_TUNABLES", "")
    return {"GLIBC_TUNABLES": f"{have}:{TUNABLES}" if have and TUNABLES not in have else (have or TUNABLES)}


def runtime_env(base: dict | None = None) -> dict:
    """A Ray `runtime_env` that is `base` with `worker_env()` merged into its env_vars (the one shape every caller
    needs: Train's worker_runtime_env, a Serve deployment's ray_actor_options, an actor's options)."""
    base = dict(base or {})
    env = dict(base.get("env_vars") or {})
    return {**base, "env_vars": {**env, **worker_env(env)}}


def started_with_reuse(environ: dict | None = None) -> bool:
    """Whether this process was started with `worker_env()`'s settings."""
    return TUNABLES in (os.environ if environ is None else environ).get("GLIBC_TUNABLES", "")


def reuse_freed_memory() -> dict:
    """This process, from now on, main thread: no mmap for large blocks, no trimming (once per process);
    returns {'applied': bool, 'reason': str}."""
    if _applied:
        return dict(_applied)
    if not sys.platform.startswith("linux"):
        _applied.update(applied=False, reason=f"not Linux ({sys.platform})")
        return dict(_applied)
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the allocator this process uses (a preloaded one has no mallopt)
    except (OSError, AttributeError) as exc:
        _applied.update(applied=False, reason=f"no glibc mallopt ({exc})")
        return dict(_applied)
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # -1 is SIZE_MAX to glibc's size_t threshold: never trim (mallopt(3))
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1
    _applied.update(applied=ok, reason="mallopt" if ok else "mallopt refused the settings")
    return dict(_applied)
