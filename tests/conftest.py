"""Shared fixtures. One Ray cluster per test file (see `ray_cluster`)."""
from __future__ import annotations

import faulthandler
import os
from pathlib import Path

import pytest

from steve1_ray.numerics import ISA_ENV, has_isa

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# The kernels every `steve1` command pins by default (steve1_ray.numerics), set before torch's first operation: the
# tests' own processes, their Ray workers and the commands they start all compute what a user's commands compute.
if has_isa("avx2"):
    for _key, _value in ISA_ENV["avx2"].items():
        os.environ.setdefault(_key, _value)

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


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster with the dashboard on (Train under Tune needs it; see docs), new for each test file.

    One per file, not one per session (a start and a stop: 4-10 s on 2 cores): a file's leftovers (a Train
    controller still alive, a Dataset execution's resource request that Ray Data's AutoscalingCoordinator keeps
    reserving, a Serve controller) stay in that file's cluster. In session 35's CI every Ray Data job of
    test_data_pipeline.py hung for its whole limit on the session's shared cluster, after other files had used it,
    and passed here alone."""
    import ray

    if ray.is_initialized():  # a test that connected elsewhere and did not disconnect: start clean
        ray.shutdown()
    # address="local": always a private cluster, even when `ray start` left one running on this host.
    ray.init(address="local", num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=True,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield ray
    ray.shutdown()


def ray_state() -> str:
    """One line on this process's Ray cluster: CPUs free of total, tasks by state, live actors, and what Ray Data's
    AutoscalingCoordinator reserves for each requester (a Dataset gets only its reservation)."""
    import ray

    if not ray.is_initialized():
        return "no Ray cluster in this process"
    parts = [f"CPU free {ray.available_resources().get('CPU', 0):g} of {ray.cluster_resources().get('CPU', 0):g}"]
    try:
        from collections import Counter

        from ray.util import state

        # this process's cluster by its address: without one the state API takes the newest cluster on the host,
        # which under pytest-xdist may be the other worker's
        gcs = ray.get_runtime_context().gcs_address
        tasks = Counter(f"{t.name}:{t.state}" for t in state.list_tasks(address=gcs, limit=1000, timeout=10)
                        if t.state not in ("FINISHED", "FAILED"))
        actors = Counter(a.class_name for a in state.list_actors(address=gcs, filters=[("state", "=", "ALIVE")],
                                                                 timeout=10))
        parts += [f"tasks {dict(tasks)}", f"actors {dict(actors)}"]
    except Exception as e:  # the state API needs the dashboard; say so rather than fail the report
        parts.append(f"state API: {type(e).__name__}")
    try:
        coordinator = ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator")
        reserved = ray.get(coordinator.__ray_call__.remote(
            lambda self: {k: {n: {r: v for r, v in b.items() if r in ("CPU", "GPU")}
                              for n, b in req.reserved_resources.items()}
                          for k, req in self._ongoing_reqs.items()}), timeout=10)
        parts.append(f"Data reservations {reserved}")
    except Exception as e:  # no Dataset ran yet, or Ray moved its internals
        parts.append(f"Data reservations: {type(e).__name__}")
    return "; ".join(parts)


RAY_AT_TIMEOUT = "Ray cluster at the timeout"
_timed_out: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that times out (pytest-timeout, or a subprocess's timeout) carries the state of its Ray cluster in its
    report: a hang's cause is in the cluster, not in the stack of the waiting driver."""
    outcome = yield
    report = outcome.get_result()
    if call.when == "call" and report.failed and "Timeout" in str(report.longrepr)[-3000:]:
        report.sections.append((RAY_AT_TIMEOUT, ray_state()))


def pytest_runtest_logreport(report):
    # runs where the reports arrive: in the xdist controller too, which prints the summary
    _timed_out.extend(f"{report.nodeid}: {text}" for name, text in report.sections if name == RAY_AT_TIMEOUT)


def pytest_terminal_summary(terminalreporter):
    """One line per timed-out test at the end of the run (CI keeps only the end of the output)."""
    for line in _timed_out:
        terminalreporter.write_line(f"timed out; {line}"[:1500])


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
