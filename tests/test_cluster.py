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
def test_ray_state_names_a_paused_datasets_reservation_and_the_fixture_stops_it(ray_cluster):
    """conftest.ray_state, the line a timed-out test reports: CPUs free, live actors and the CPUs Ray Data's
    AutoscalingCoordinator reserves for each Dataset execution (a Dataset runs on its reservation only: a hang
    starved by another execution shows there). conftest.stop_open_datasets, which the cluster fixture runs before
    `ray.shutdown()`, ends such an execution and its reservation."""
    import time

    import ray.data as rd

    from conftest import ray_state, stop_open_datasets

    def state_when(cond):
        deadline = time.time() + 60
        while not cond(line := ray_state()) and time.time() < deadline:
            time.sleep(2)  # the state API and the coordinator's 20-s tick lag the cluster
        return line

    batches = iter(rd.range(1000, override_num_blocks=50).map(lambda r: r).iter_batches(batch_size=1))
    next(batches)  # the execution stays open, paused, holding its reservation
    line = state_when(lambda s: "_AutoscalingCoordinatorActor" in s and "'CPU': 2" in s)
    assert line.startswith("CPU free ") and " of 2;" in line, line
    assert "'_AutoscalingCoordinatorActor': 1" in line and "Data reservations {'data-dataset_" in line, line
    assert "'CPU': 2" in line, line  # alone on the cluster, the paused execution has both CPUs
    assert stop_open_datasets() == 1 and stop_open_datasets() == 0
    assert state_when(lambda s: "Data reservations {}" in s).endswith("Data reservations {}")
