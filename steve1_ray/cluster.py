"""Joining Ray: the one place where any job starts or joins a Ray cluster.

    from steve1_ray.cluster import connect
    ray = connect()                          # then ray.remote / Ray Data / Ray Train / Serve as usual

The rule, in order:

1. Ray is already initialised in this process (a test fixture, the quick start, a notebook): use it.
2. The driver was started by `ray job submit`, or `RAY_ADDRESS` is a dashboard/client URL: `ray.init()` reads
   the address and the submission's runtime env.
3. `RAY_ADDRESS` is set to a cluster's address — or to `local`, to start a private cluster even when one runs
   on this host: `ray.init(address=...)`.
4. Unless `private=True`: a cluster started with `ray start` runs on this host: join it (`address="auto"`).
5. None: start a local cluster for this process (`num_cpus` cores, all by default).

`dashboard=True` is for Ray Train under Tune (`steve1 sweep`): the placement-group cleaner of stopped trials
finds the State API through `RAY_ADDRESS` / `RAY_API_SERVER_ADDRESS`, so the cluster's address is passed to every
worker of the job (when this process picks the runtime env, not under `ray job submit`), and a local cluster
starts with the dashboard on a free port. `private=True` is for the quick start: its own cluster, never a
stranger's left running by `ray start` (set RAY_ADDRESS to use one).
"""
from __future__ import annotations

import os


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connect(log_to_driver: bool = True, num_cpus: int | None = None, include_dashboard: bool | None = None,
            dashboard: bool = False, private: bool = False, env_vars: dict[str, str] | None = None):
    """Join or start a Ray cluster by the rule above; returns the `ray` module.

    `env_vars` go into the runtime env of every worker when this process starts the job's runtime env."""
    import ray

    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    if ray.is_initialized():
        return ray
    env_vars = dict(env_vars or {})
    address = os.environ.get("RAY_ADDRESS", "")
    submitted = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    if submitted or address.startswith(("http://", "https://", "ray://")) or (address and not dashboard
                                                                               and not env_vars):
        ray.init(log_to_driver=log_to_driver)
        return ray
    if address:
        if dashboard and address != "local":
            env_vars.setdefault("RAY_ADDRESS", address)
        ray.init(address=address, log_to_driver=log_to_driver, num_cpus=num_cpus if address == "local" else None,
                 runtime_env={"env_vars": env_vars} if env_vars else None)
        return ray
    if not private:
        try:
            ray.init(address="auto", log_to_driver=log_to_driver,
                     runtime_env={"env_vars": env_vars} if env_vars else None)
            return ray
        except (ConnectionError, RuntimeError):  # none running on this host (or several: pick none of them)
            pass
    kwargs: dict = {}
    if dashboard:
        port = _free_port()
        kwargs = {"include_dashboard": True, "dashboard_port": port}
        env_vars.setdefault("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{port}")
    elif include_dashboard is not None:
        kwargs = {"include_dashboard": include_dashboard}
    ray.init(address="local" if private else None, num_cpus=num_cpus, log_to_driver=log_to_driver,
             runtime_env={"env_vars": env_vars} if env_vars else None, **kwargs)
    return ray
