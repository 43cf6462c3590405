"""Shared fixtures. One Ray cluster per test session (starting one costs ~3 s on 2 cores)."""
from __future__ import annotations

import faulthandler
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


# The longest test files first (seconds on 2 idle cores, benchmarks/RESULTS.md "CI"): scripts/test.sh hands whole
# files to its pytest-xdist processes in collection order (`--no-loadscope-reorder`), so these start at once and
# the many short files fill in the end, instead of two long ones starting last and running on alone.
LONGEST_FIRST = ["test_multinode.py", "test_quickstart.py", "test_release.py", "test_sweep_run.py",
                 "test_gpu_check.py", "test_train_ray.py", "test_embedder.py", "test_serve_soak.py", "test_serve.py",
                 "test_progress.py", "test_evaluate.py", "test_data_pipeline.py", "test_serve_schema.py"]


def pytest_sessionfinish(session, exitstatus):
    """The per-test limits (pyproject.toml: pytest-timeout, faulthandler_timeout) end with the last test's teardown;
    a hang after it (an xdist worker's shutdown, Ray's exit handlers) would hold CI to its limit without a word. So:
    every thread's stack and exit 1, if this process is still alive 5 minutes after its session finished."""
    faulthandler.dump_traceback_later(float(os.environ.get("STEVE1_TEST_EXIT_GRACE_S", 300)), exit=True)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


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


class PlanStop(Exception):
    """Raised by `stage_plan` at the stage a test stops at."""


@pytest.fixture
def stage_plan(monkeypatch):
    """A pipeline's plan without its jobs or a Ray cluster: every `Stages.run` appends (command, argv) to the
    returned list instead of running; a dataset stage leaves an empty shard manifest so the plan goes on; the
    `stop` predicate (set it on the list: `plan.stop = lambda command, argv: ...`) ends the plan there with
    `PlanStop`."""
    from steve1_ray import quickstart, release
    from steve1_ray.stages import Stages

    class Plan(list):
        stop = staticmethod(lambda command, argv: False)

    plan = Plan()

    def run(self, name, command, module, argv, done=None):
        plan.append((command, list(argv)))
        if plan.stop(command, argv):
            raise PlanStop(command)
        if command == "dataset":
            shards = Path(next(a for a in argv if a.startswith("output=")).split("=", 1)[1])
            shards.mkdir(parents=True, exist_ok=True)
            (shards / "manifest.json").write_text('{"counts": {"frames": 0}}')

    monkeypatch.setattr(Stages, "run", run)
    for module in (quickstart, release):
        monkeypatch.setattr(module, "connect", lambda **kw: None)
    return plan
