"""Shared fixtures. One Ray cluster per test session (starting one costs ~3 s on 2 cores)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster with the dashboard on (Train under Tune needs it; see docs)."""
    import ray

    if not ray.is_initialized():
        # address="local": always a private cluster, even when `ray start` left one running on this host.
        ray.init(address="local", num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=True,
                 log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    """A stand-in shard dataset for configs that must point at an existing one (sweeps); its contents do not
    matter there."""
    root = tmp_path_factory.mktemp("shards")
    (root / "manifest.json").write_text("{}")
    return str(root)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
