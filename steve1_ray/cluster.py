"""Joining Ray: the one place every job decides which cluster it runs on.

    from steve1_ray.cluster import connect
    ray = connect()                          # then ray.remote / Ray Data / Ray Train / Serve as usual

The rule, in order:

1. Ray is already initialised in this process (a test fixture, the quick start, a notebook): use it.
2. `RAY_ADDRESS` is set — `ray job submit` sets it for the driver; a user may set it to a cluster's address, or
   to `local` to start a private cluster even when one runs on this host: `ray.init()` reads it.
3. A cluster started with `ray start` runs on this host: join it (`address="auto"`).
4. None: start a local cluster for this process (`num_cpus` cores, all by default).

`steve1 sweep` keeps its own variant (`steve1_ray.sweep.connect_ray`): Ray Train under Tune needs the dashboard
and the cluster's address passed to every trial.
"""
from __future__ import annotations

import os


def connect(log_to_driver: bool = True, num_cpus: int | None = None, include_dashboard: bool | None = None):
    """Join or start a Ray cluster by the rule above; returns the `ray` module."""
    import ray

    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    if ray.is_initialized():
        return ray
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver)
        return ray
    try:
        ray.init(address="auto", log_to_driver=log_to_driver)
    except (ConnectionError, RuntimeError):  # none running on this host (or several: pick none of them)
        ray.init(num_cpus=num_cpus, log_to_driver=log_to_driver, include_dashboard=include_dashboard)
    return ray
