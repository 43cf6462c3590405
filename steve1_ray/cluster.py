"""Joining Ray: the one place where any job starts or joins a Ray cluster.

    from steve1_ray.cluster import connect
    ray = connect()                          # then ray.remote / Ray Data / Ray Train / Serve as usual

The rule, in order:

1. Ray is already initialised in this process (a test fixture, the quick start, a notebook): use it.
2. The driver was started by `ray job submit`, or `RAY_ADDRESS` is a dashboard/client URL: `ray.init()` reads
   the address and the submission's runtime env (a pinned Ray Client driver, `ray://`, warns that its workers run
   the nodes' own kernels: `_warn_unpinned_client`).
3. `RAY_ADDRESS` is a cluster's address (`host:port`): join it.
4. Unless `private=True` or `RAY_ADDRESS=local`: a cluster started with `ray start` runs on this host: join it
   (the address `ray start` wrote to Ray's temp dir, as a plain `ray.init()` finds it, when its GCS still runs).
   Never another process's own cluster: Ray's `address="auto"` would join any GCS it finds on the host, and that
   cluster ends with the process that started it (a quick start's, another job's), taking this job with it.
5. Otherwise start a cluster of this process's own (`num_cpus` cores, all by default).

`dashboard=True` is for Ray Train under Tune (`steve1 sweep`): the placement-group cleaner of stopped trials
finds the State API through `RAY_ADDRESS` / `RAY_API_SERVER_ADDRESS`, so a joined cluster's address is passed to
every worker (rule 3; under `ray job submit` the submission sets the environment), and a started cluster gets the
dashboard on a free port. `private=True` is for the quick start: its own cluster, never a stranger's left running
by `ray start` (set RAY_ADDRESS to use one).
"""
from __future__ import annotations

import json
import os


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on `host` now (another process may take it before anyone binds it)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def started_cluster() -> str | None:
    """The GCS address of the cluster `ray start` started on this host, if it still runs; else None.

    Ray keeps the last `ray start`'s address in its temp dir (`ray.init()` without an address reads it there), and
    finds the running GCS processes by their command lines; both are Ray internals with no public API (Ray 2.60)."""
    from ray._private import services

    address = services.find_bootstrap_address(None)
    return address if address and address in services.find_gcs_addresses() else None


def connect(log_to_driver: bool = True, num_cpus: int | None = None, include_dashboard: bool | None = None,
            dashboard: bool = False, private: bool = False, env_vars: dict[str, str] | None = None):
    """Join or start a Ray cluster by the rule above; returns the `ray` module.

    `num_cpus`, `include_dashboard` and `env_vars` (put into every worker's environment) apply to a cluster this
    process starts; a cluster that is joined keeps its own. The CPU-kernel pin (`steve1_ray.numerics`), when this
    process has one, goes to the workers of a cluster it joins by its GCS address too; a submitted job's workers
    take the job's runtime environment (`ray job submit --runtime-env-json`), a Ray Client driver's the nodes' own
    (both warned when they lack it)."""
    import ray

    from steve1_ray.numerics import pinned_env

    pin = pinned_env()

    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    if ray.is_initialized():
        return ray
    address = os.environ.get("RAY_ADDRESS", "")
    submitted = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    if submitted or address.startswith(("http://", "https://", "ray://")):  # rule 2
        if submitted and pin:
            _warn_unpinned_job(pin)
        elif address.startswith("ray://") and pin:
            _warn_unpinned_client(pin)
        ray.init(log_to_driver=log_to_driver)
        return ray
    if address and address != "local":  # rule 3: a cluster's address
        env = {**pin, **({"RAY_ADDRESS": address} if dashboard else {})}
        ray.init(address=address, log_to_driver=log_to_driver, runtime_env={"env_vars": env} if env else None)
        return ray
    started = None if private or address == "local" else started_cluster()
    if started:  # rule 4
        try:
            ray.init(address=started, log_to_driver=log_to_driver, runtime_env={"env_vars": pin} if pin else None)
            return ray
        except (ConnectionError, RuntimeError):  # it stopped in between
            pass
    env = {**pin, **(env_vars or {})}  # rule 5 (and RAY_ADDRESS=local): start one
    kwargs: dict = {} if include_dashboard is None else {"include_dashboard": include_dashboard}
    if dashboard:
        port = free_port()
        kwargs = {"include_dashboard": True, "dashboard_port": port}
        env.setdefault("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{port}")
    ray.init(address="local", num_cpus=num_cpus, log_to_driver=log_to_driver,
             runtime_env={"env_vars": env} if env else None, **kwargs)
    return ray


def _warn_unpinned_job(pin: dict[str, str]) -> None:
    """A submitted job's workers take the job's runtime environment, not its driver's: say so where that environment
    does not pin the CPU kernels the driver was pinned to (the workers would compute with the cluster's own)."""
    try:
        job = json.loads(os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"]).get("runtime_env") or {}
        env = job.get("env_vars") or {}
    except (ValueError, AttributeError):
        env = {}
    if any(str(env.get(k, "")).lower() != v.lower() for k, v in pin.items()):  # the libraries read them so
        print("warning: this job's workers take the job's runtime environment, which does not pin the CPU kernels "
              f"its driver runs ({', '.join(f'{k}={v}' for k, v in pin.items())}): submit it with --runtime-env-json "
              f"'{json.dumps({'env_vars': pin})}' to run them everywhere (docs/world.md)", flush=True)


def _warn_unpinned_client(pin: dict[str, str]) -> None:
    """A Ray Client driver (`ray://`) does not send its CPU-kernel pin to the cluster's workers: in Ray 2.60 a client
    that brings a runtime environment fails or hangs ("Starting Ray client server failed") against a head started
    without `--runtime-env-agent-port`, as `ray start --head` does by default (the client server starts before the
    agent has a port). The workers run in the nodes' own environment; say how to pin them there."""
    print("warning: the workers of a Ray Client (ray://) driver run in the cluster nodes' environment, not with this "
          f"driver's CPU-kernel pin ({', '.join(f'{k}={v}' for k, v in pin.items())}): start the nodes with those "
          "variables set (`env ... ray start ...`) to run the same kernels everywhere, or join by the GCS address "
          "(RAY_ADDRESS=host:port), which hands them the pin (docs/world.md)", flush=True)


def check_workers_fit(num_workers: int, cpus_per_worker: float, use_gpu: bool = False,
                      gpus_per_worker: float = 1.0, fix: str = "lower num_workers or cpus_per_worker") -> None:
    """Fail fast, naming the fix, when the cluster can never place `num_workers` Ray Train workers of this size
    (Ray Train would wait for them forever). Call after `connect()`."""
    import ray

    from steve1_ray.config import ConfigError

    if num_workers == 0:
        return
    total = ray.cluster_resources()
    need_cpu = num_workers * cpus_per_worker
    if total.get("CPU", 0) < need_cpu:
        raise ConfigError(f"num_workers={num_workers} x cpus_per_worker={cpus_per_worker} needs {need_cpu} "
                          f"CPUs but the cluster has {total.get('CPU', 0)}: {fix}")
    if use_gpu and total.get("GPU", 0) < num_workers * gpus_per_worker:
        raise ConfigError(f"use_gpu=true with num_workers={num_workers} needs {num_workers * gpus_per_worker} GPUs "
                          f"but the cluster has {total.get('GPU', 0)}: set use_gpu=false (and precision=fp32 or "
                          f"bf16) or lower num_workers")
