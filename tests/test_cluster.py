"""steve1_ray.cluster.connect: every job joins Ray by the same rule."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from steve1_ray.cluster import connect


def test_uses_the_cluster_this_process_already_has(ray_cluster):
    import ray

    before = ray.get_runtime_context().gcs_address
    assert connect(log_to_driver=False) is ray
    assert ray.get_runtime_context().gcs_address == before  # not a second cluster


@pytest.mark.slow
def test_ray_address_local_starts_a_private_cluster(ray_cluster):
    import ray

    code = ("import json, ray; from steve1_ray.cluster import connect; connect(log_to_driver=False); "
            "print(json.dumps({'gcs': ray.get_runtime_context().gcs_address, 'ok': ray.get(ray.put(7)) == 7}))")
    env = {**os.environ, "RAY_ADDRESS": "local"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ok"] and got["gcs"] != ray.get_runtime_context().gcs_address


@pytest.mark.slow
def test_another_processes_own_cluster_is_never_joined(ray_cluster):
    """Rule 4 joins a `ray start` cluster only. This process's cluster (the fixture's, started by ray.init like a
    quick start's) ends with this process, so a job in another process that joined it would die with it."""
    import ray

    from steve1_ray.cluster import started_cluster

    mine = ray.get_runtime_context().gcs_address
    assert started_cluster() != mine
    code = ("import json, ray; from steve1_ray.cluster import connect; connect(log_to_driver=False, num_cpus=1); "
            "print(json.dumps({'gcs': ray.get_runtime_context().gcs_address, 'ok': ray.get(ray.put(7)) == 7}))")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ok"] and got["gcs"] != mine


@pytest.mark.slow
def test_ray_state_reads_this_clusters_cpus_actors_and_ray_datas_reservations(ray_cluster):
    """conftest.ray_state, the line a timed-out test reports: CPUs free, live actors, and the CPUs Ray Data's
    AutoscalingCoordinator reserves for each open Dataset execution (a Dataset runs on its reservation only); a
    finished execution leaves none."""
    import time

    import ray.data as rd

    from conftest import ray_state

    assert "Data reservations: ValueError" in ray_state()  # no Dataset yet: no coordinator
    rows = rd.range(100, override_num_blocks=4).map(lambda r: {"id": r["id"] * 2}).take_all()
    assert sum(r["id"] for r in rows) == 9900
    deadline = time.time() + 60
    while not ((line := ray_state()).startswith("CPU free 2 of 2;") and "_AutoscalingCoordinatorActor" in line) \
            and time.time() < deadline:
        time.sleep(2)  # the state API lags the cluster by a few seconds, the last task's CPU too
    assert line.startswith("CPU free 2 of 2; tasks {"), line
    assert "'_AutoscalingCoordinatorActor': 1" in line and line.endswith("Data reservations {}"), line
