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
