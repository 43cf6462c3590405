"""steve1_ray.hostmem: with the workers' tunables a freed large block is reused by the next allocation without
faulting its pages in again, also in a thread (where Ray Train, Serve and the evaluation compute); glibc's defaults
fault it in every time, and `mallopt` at run time reaches only the main thread."""
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from steve1_ray import hostmem

CHILD = textwrap.dedent("""
    import resource, sys, threading
    import numpy as np
    if sys.argv[1] == "mallopt":
        from steve1_ray.hostmem import reuse_freed_memory
        assert reuse_freed_memory()["applied"]
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out = {}
    def work():
        x = np.ones(2**25); del x  # 256 MiB, touched, freed
        y = [np.ones(2**21) for _ in range(8)]; del y  # eight 16 MiB blocks
        before = faults()
        for _ in range(3):  # what a training step does: the same blocks again
            x = np.ones(2**25); del x
            y = [np.ones(2**21) for _ in range(8)]; del y
        out["faults"] = faults() - before
    if sys.argv[2] == "thread":
        t = threading.Thread(target=work); t.start(); t.join()
    else:
        work()
    print(out["faults"])
""")
HUGE_PAGES = 3 * 2 * 2**28 // 2**21  # three rounds of 512 MiB in 2 MiB pages (numpy asks for huge pages; 4 KiB: 512x)
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")


def _faults(mode: str, where: str, env: dict | None = None) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, where], capture_output=True, text=True, check=True,
                         timeout=120, env={**os.environ, **(env or {})})
    return int(out.stdout.strip())


@linux
@pytest.mark.parametrize("where", ["main", "thread"])
def test_the_workers_tunables_reuse_freed_blocks(where):
    assert _faults("default", where) >= HUGE_PAGES  # glibc: every large block mmapped and faulted in afresh
    assert _faults("default", where, hostmem.worker_env({})) < 10  # reused: no page faulted in again


@linux
def test_mallopt_at_run_time_reaches_the_main_thread_only():
    assert _faults("mallopt", "main") < 10
    assert _faults("mallopt", "thread") >= HUGE_PAGES // 4  # a thread's own arena mmaps blocks over its 64 MiB heap


def test_worker_env_keeps_a_callers_tunables_before_ours():
    assert hostmem.worker_env({}) == {"GLIBC_TUNABLES": hostmem.TUNABLES}
    mine = hostmem.worker_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"})["GLIBC_TUNABLES"]
    assert mine == "glibc.malloc.tcache_count=0:" + hostmem.TUNABLES
    assert hostmem.worker_env({"GLIBC_TUNABLES": mine}) == {"GLIBC_TUNABLES": mine}  # not twice
    assert hostmem.started_with_reuse({"GLIBC_TUNABLES": mine}) and not hostmem.started_with_reuse({})


def test_every_worker_kind_is_started_with_the_tunables():
    from steve1_ray.serving.app import build_app
    from steve1_ray.serving.config import ServeConfig
    from steve1_ray.train.config import TrainConfig
    from steve1_ray.train.run import build_trainer

    want = {"GLIBC_TUNABLES": hostmem.TUNABLES}
    trainer = build_trainer(TrainConfig(model="debug", num_workers=1, storage_path="/tmp/unused"))
    assert trainer.run_config.worker_runtime_env["env_vars"] == want
    off = build_trainer(TrainConfig(model="debug", num_workers=1, storage_path="/tmp/unused", reuse_freed_memory=False))
    assert not (off.run_config.worker_runtime_env or {}).get("env_vars")

    def policy_env(app):
        policy = app._bound_deployment.init_args[1]._bound_deployment
        assert policy.name == "PolicyServer" and policy.ray_actor_options["num_cpus"] == 0.5  # kept
        return (policy.ray_actor_options.get("runtime_env") or {}).get("env_vars", {})
    assert policy_env(build_app(ServeConfig(policy="debug", rollout_workers=0))) == want
    assert policy_env(build_app(ServeConfig(policy="debug", rollout_workers=0, reuse_freed_memory=False))) == {}
    # the Serve config file's PolicyServer: the same string (Serve applies the file's ray_actor_options)
    from pathlib import Path
    cfg = yaml.safe_load((Path(hostmem.__file__).parent / "serving" / "serve_config.yaml").read_text())
    policy = next(d for d in cfg["applications"][0]["deployments"] if d["name"] == "PolicyServer")
    assert policy["ray_actor_options"]["runtime_env"]["env_vars"] == want



@linux
def test_a_ray_actor_started_with_worker_env_reuses_freed_blocks_in_its_threads(ray_cluster):
    """The path the training, serving and evaluation workers take: runtime_env env_vars reach glibc at the
    worker's start, and a thread of the actor (like Ray Train's training thread) allocates without refaults."""
    import ray

    @ray.remote(num_cpus=0, max_concurrency=2)
    class Probe:
        def faults_in_a_thread(self):
            import resource
            import threading

            import numpy as np
            out = {}

            def work():
                x = np.ones(2**25); del x
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                for _ in range(3):
                    x = np.ones(2**25); del x
                out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            t = threading.Thread(target=work)
            t.start()
            t.join()
            return out["faults"], hostmem.started_with_reuse()

    with_env = Probe.options(runtime_env={"env_vars": hostmem.worker_env({})}).remote()
    plain = Probe.remote()
    faults, started = ray.get(with_env.faults_in_a_thread.remote())
    assert started and faults < 10, faults
    faults, started = ray.get(plain.faults_in_a_thread.remote())
    assert not started and faults >= 3 * 2**28 // 2**21, faults
