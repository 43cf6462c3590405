"""A real two-node Ray cluster on this machine and an S3-compatible store (moto's server), driven the way a user
drives a cluster (README, "Several nodes, shards and checkpoints in S3"): `ray start --head`, `ray start
--address=...` for a second node with its own resources, then `ray job submit --working-dir .` for each job and
`serve deploy` for the service, with `s3://` paths end to end: dataset -> training on both nodes -> a killed
worker -> resume from S3 -> serving that checkpoint from replicas on both nodes; and a two-trial sweep that reads
its shards from S3 and writes its results there.

The nodes find the store as every AWS client does (AWS_ENDPOINT_URL and credentials in their environment), as
a cluster's nodes find S3 through their instance role.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from steve1_ray.cluster import free_port as _free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BUCKET = "steve1-test"
S3 = f"s3://{BUCKET}"


def _wait(what: str, ok, timeout: float, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = ok()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _pids_with(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _cluster_pids(temp_dir: str, gcs_port: int) -> list[int]:
    """A test cluster's processes: those naming its temp dir, and the Ray Client servers of its head, which name only
    its GCS address and outlive `ray start` as orphans (not the temp dir's children)."""
    servers = set(_pids_with("ray.util.client.server"))
    return _pids_with(temp_dir) + [pid for pid in _pids_with(f":{gcs_port}\0") if pid in servers]


def _kill_trees(roots: list[int]) -> None:
    """SIGKILL these processes and all their descendants (Ray's workers are the raylets' children)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    todo, seen = list(roots), set()
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += children.get(pid, [])
    for pid in seen:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """moto's S3 server with a bucket, a Ray head (resource `node_a`) and a second node (`node_b`), 2 CPUs each.

    Torn down by killing exactly these processes: `ray stop` would stop every Ray cluster on the machine."""
    tmp = tmp_path_factory.mktemp("multinode")
    venv_bin = str(Path(sys.executable).parent)
    s3_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "AWS_"))}
    env.update(PATH=f"{venv_bin}:{env.get('PATH', '')}", AWS_ENDPOINT_URL=f"http://127.0.0.1:{s3_port}",
               AWS_ACCESS_KEY_ID="steve1", AWS_SECRET_ACCESS_KEY="steve1-secret", AWS_DEFAULT_REGION="us-east-1",
               RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1",
               RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS="0")
    moto_log = open(tmp / "moto.log", "w")
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                            stdout=moto_log, stderr=subprocess.STDOUT, env=env)
    # a short temp dir: Ray's socket paths must stay under 108 characters
    temp_dir = f"/tmp/steve1_mn_{os.getpid()}_{s3_port}"
    gcs, dash = _free_port(), _free_port()
    try:
        import boto3

        _wait("the S3 server", lambda: _connects(s3_port), 60)
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="steve1",
                     aws_secret_access_key="steve1-secret", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        common = ["--num-cpus=2", "--object-store-memory=300000000", "--disable-usage-stats"]
        _run(["ray", "start", "--head", f"--port={gcs}", "--resources={\"node_a\": 1}", "--include-dashboard=true",
              "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
              f"--dashboard-agent-listen-port={_free_port()}", f"--ray-client-server-port={_free_port()}",
              f"--temp-dir={temp_dir}", *common], env, 120)
        _run(["ray", "start", f"--address=127.0.0.1:{gcs}", "--resources={\"node_b\": 1}",
              f"--dashboard-agent-listen-port={_free_port()}", *common], env, 120)
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dash}", "gcs": f"127.0.0.1:{gcs}", "tmp": tmp}
    finally:
        _kill_trees(_cluster_pids(temp_dir, gcs))
        moto.kill()
        moto.wait(timeout=30)
        moto_log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)  # the nodes' logs and the uploaded working dirs


def _connects(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run(cmd: list[str], env: dict, timeout: float, cwd: Path = REPO) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _submit(cluster: dict, entrypoint: list[str], timeout: float = 600, wait: bool = True):
    """`ray job submit --working-dir .` as the README shows it; returns the job's output (or the Popen)."""
    cmd = ["ray", "job", "submit", f"--address={cluster['dashboard']}", "--working-dir", ".", "--", *entrypoint]
    if wait:
        return _run(cmd, cluster["env"], timeout)
    return subprocess.Popen(cmd, env=cluster["env"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _fs(cluster):
    import pyarrow.fs as pafs

    endpoint = cluster["env"]["AWS_ENDPOINT_URL"].removeprefix("http://")
    return pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key="steve1",
                             secret_key="steve1-secret", region="us-east-1")


def _ls(fs, path: str, folders: bool = False) -> list[str]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(i.path for i in infos if not folders or i.type == pafs.FileType.Directory)


def _checkpoints(fs, run: str) -> list[str]:
    """A Ray Train run's checkpoint folders, oldest first (their names hold the time they were made)."""
    return [p for p in _ls(fs, run, folders=True) if p.rsplit("/", 1)[-1].startswith("checkpoint_")]


def _registered(fs, run: str) -> bool:
    try:
        snapshot = json.loads(fs.open_input_stream(f"{run}/checkpoint_manager_snapshot.json").read())
    except (OSError, ValueError):
        return False
    return bool(snapshot.get("latest_checkpoint_result"))


def _actors(cluster: dict, class_name: str) -> list[dict]:
    from ray.util.state import list_actors

    return [a if isinstance(a, dict) else a.__dict__ for a in
            list_actors(address=cluster["dashboard"], filters=[("class_name", "=", class_name)], detail=True,
                        limit=1000, raise_on_missing_output=False)]


def _alive_pair(cluster: dict) -> list[dict] | None:
    alive = [a for a in _actors(cluster, "RayTrainWorker") if a["state"] == "ALIVE"]
    return alive if len(alive) == 2 else None


def _node_ids(cluster: dict) -> dict[str, str]:
    """{resource name node_a/node_b: node id}."""
    from ray.util.state import list_nodes

    out = {}
    for n in list_nodes(address=cluster["dashboard"], detail=True):
        n = n if isinstance(n, dict) else n.__dict__
        for r in ("node_a", "node_b"):
            if r in (n.get("resources_total") or {}):
                out[r] = n["node_id"]
    return out


def _record(root: Path, n: int = 3) -> Path:
    from steve1_ray.world.recorder import record_episode

    for i in range(n):
        record_episode(root, f"mn{i}", seed=i, max_steps=160)
    return root / "contractor"


def test_s3_dataset_train_on_two_nodes_resume_after_a_killed_worker_and_serve_it(cluster):
    t0 = time.time()
    fs, nodes = _fs(cluster), _node_ids(cluster)
    assert set(nodes) == {"node_a", "node_b"} and nodes["node_a"] != nodes["node_b"]

    # 1. the dataset job: local recordings (a folder every node of this machine sees) -> shards in S3
    recordings = _record(cluster["tmp"] / "rec")
    out = _submit(cluster, ["python", "jobs/generate_dataset.py", "--config", "world", f"output={S3}/shards",
                            f"sources=[local:{recordings}]", "mineclip_preset=debug", "progress=false"])
    assert "succeeded" in out.lower(), out[-3000:]
    manifest = json.loads(fs.open_input_stream(f"{BUCKET}/shards/manifest.json").read())
    assert manifest["counts"]["episodes"] == 3, manifest
    assert any(p.endswith(".parquet") for p in _ls(fs, f"{BUCKET}/shards/shards") + _ls(fs, f"{BUCKET}/shards"))

    print(f"dataset job: {time.time() - t0:.0f} s", flush=True)
    # 2. training, one worker per node (STRICT_SPREAD), checkpoints in S3; kill the worker on node_b mid-run
    run = f"{BUCKET}/runs/mn"
    job = _submit(cluster, ["python", "jobs/train.py", "--config", "debug", f"data={S3}/shards",
                            f"storage_path={S3}/runs", "run_name=mn", "num_workers=2", "cpus_per_worker=1",
                            "placement_strategy=STRICT_SPREAD", "T=16", "trunc_t=8", "batch_size=1",
                            "grad_accum=1", "n_frames=1024", "warmup_frames=32", "checkpoint_every_steps=4",
                            "val_every_steps=8", "val_max_sequences=2", "log_every_steps=4", "loader_threads=1",
                            "max_failures=2"], wait=False)
    try:
        # a checkpoint Ray Train has registered (its snapshot names it), not just one being uploaded
        _wait("a registered checkpoint in S3", lambda: _registered(fs, run), 300)
        alive = _wait("both training workers", lambda: _alive_pair(cluster), 60)
        assert sorted(a["node_id"] for a in alive) == sorted(nodes.values()), alive  # one worker on each node
        os.kill(next(a["pid"] for a in alive if a["node_id"] == nodes["node_b"]), signal.SIGKILL)
        output, _ = job.communicate(timeout=600)
    finally:
        job.kill()
    assert job.returncode == 0, output[-5000:]
    assert "resolved config:" in output and "finished: 1024 frames" in output, output[-3000:]
    placed = _actors(cluster, "RayTrainWorker")
    assert {a["node_id"] for a in placed} == set(nodes.values()), placed    # both nodes trained ...
    assert len(placed) >= 4 and any(a["state"] == "DEAD" for a in placed)   # ... and a worker group was restarted
    latest = _checkpoints(fs, run)[-1]
    progress = json.loads(fs.open_input_stream(f"{latest}/training_state/progress.json").read())
    assert progress["attempt"] >= 1 and progress["frames"] == 1024, progress   # resumed from S3, then finished
    assert fs.get_file_info(f"{run}/weights/steve1.weights").size > 0

    print(f"+ training job: {time.time() - t0:.0f} s", flush=True)
    # 3. serve that checkpoint straight from S3, one PolicyServer replica on each node
    serve_cfg = yaml.safe_load((REPO / "serve/config.yaml").read_text())
    port = _free_port()
    serve_cfg["http_options"].update(port=port)
    app = serve_cfg["applications"][0]
    app["args"].update(checkpoint=f"s3://{latest}", mineclip=None, prior=None, mineclip_preset="debug",
                       rollout_workers=0)
    for d in app["deployments"]:
        if d["name"] == "PolicyServer":
            d.pop("autoscaling_config", None)
            d.update(num_replicas=2, max_replicas_per_node=1)
    path = cluster["tmp"] / "serve.yaml"
    path.write_text(yaml.safe_dump(serve_cfg))
    _run(["serve", "deploy", str(path), f"--address={cluster['dashboard']}"], cluster["env"], 120)

    from steve1_ray.client import Client

    client = Client(f"http://127.0.0.1:{port}")
    try:
        _wait("the service", lambda: _healthy(client), 300, every=2)
    except AssertionError:
        status = subprocess.run(["serve", "status", f"--address={cluster['dashboard']}"], env=cluster["env"],
                                capture_output=True, text=True, timeout=60)
        raise AssertionError(f"the service never became healthy:\n{status.stdout}{status.stderr}") from None
    # /healthz answers once one PolicyServer replica is up; the second may still be starting on the other node
    def both_alive():
        alive = [a for a in _actors(cluster, "ServeReplica:steve1:PolicyServer") if a["state"] == "ALIVE"]
        return alive if len(alive) >= 2 else None

    replicas = _wait("both PolicyServer replicas alive", both_alive, 120, every=2)
    assert {a["node_id"] for a in replicas} == set(nodes.values()), replicas
    import numpy as np

    frame = np.zeros((160, 256, 3), np.uint8)
    for i in range(6):  # sessions hash to both replicas
        with client.session(prompt="chop a tree", cond_scale=2.0) as session:
            action = session.act(frame)
            assert "camera" in action and "attack" in action, action


def _healthy(client) -> bool:
    try:
        return bool(client.request("GET", "/healthz"))
    except Exception:
        return False


def test_two_trial_sweep_on_the_cluster_writes_its_results_to_s3(cluster):
    fs = _fs(cluster)
    from steve1_ray.train.synthetic import make_dataset

    import pyarrow.fs as pafs

    local = make_dataset(str(cluster["tmp"] / "sweep_shards"), n_episodes=4, n_frames=64, embed_dim=16)
    pafs.copy_files(local, f"{BUCKET}/sweep_shards", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)  # the trials read their shards from S3
    out = _submit(cluster, [
        "python", "jobs/sweep.py", "--config", "debug", f"storage_path={S3}/sweeps", "name=mn", "num_samples=1",
        "grace_period=32", "reduction_factor=2",
        "max_concurrent_trials=2", "space={lr: {dist: grid, values: [0.002, 0.0002]}}", f"train.data={S3}/sweep_shards",
        "train.T=16", "train.trunc_t=8", "train.batch_size=1", "train.grad_accum=1", "train.n_frames=64",
        "train.val_every_steps=2", "train.checkpoint_every_steps=2", "train.val_max_sequences=2",
        "train.loader_threads=0"])
    assert "best trial" in out, out[-3000:]
    results = fs.open_input_stream(f"{BUCKET}/sweeps/mn/results.csv").read().decode()
    assert results.count("\n") == 3, results  # header + 2 trials
    best = json.loads(fs.open_input_stream(f"{BUCKET}/sweeps/mn/best.json").read())
    assert best["params"]["lr"] in (0.002, 0.0002) and best["path"].startswith(f"{BUCKET}/sweeps/mn/")


def _client_run(script: str, env: dict, temp_dir: str, tries: int = 2) -> str:
    """Run a Ray Client driver; when the head's client proxy fails to start the driver's own server process (Ray
    2.60, now and then on a loaded 2-core box: "Starting Ray client server failed", the server process exiting at
    start), try once more, and fail with that server's log. Any other failure fails at once."""
    for k in range(tries):
        proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=180)
        if proc.returncode == 0:
            return proc.stdout + proc.stderr
        if "Starting Ray client server failed" not in proc.stderr:
            break
    logs = "".join(f"\n--- {f}:\n{f.read_text(errors='replace')[-1500:]}"
                   for f in sorted(Path(temp_dir).glob("session_*/logs/ray_client_server*.err")))
    raise AssertionError(f"the driver failed ({k + 1} tries):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}{logs}")


def test_a_pinned_ray_client_driver_connects_to_a_default_head_and_says_its_workers_run_unpinned():
    """`RAY_ADDRESS=ray://...` (Ray Client): the tasks run on the cluster's nodes, in the nodes' environment. Handing
    them the driver's CPU-kernel pin through a runtime environment would break the connection against a head started
    the default way (Ray 2.60 starts its client server before the runtime-env agent has a port, and a client with a
    runtime environment then fails or hangs: "Starting Ray client server failed", about half the tries on this box),
    so a pinned driver connects plainly and warns that its workers run the nodes' kernels, saying how to pin them.
    The head here is started the default way, without the pin; a driver without the pin is not warned."""
    from steve1_ray.numerics import ISA_ENV

    pin = ISA_ENV["avx2"]
    env = {k: v for k, v in os.environ.items() if k not in pin and not k.startswith("RAY_ADDRESS")}
    # The client proxy gives each client's server process 30 s to come up; beside the other test process on a 2-core
    # box it took longer once (CI: "Starting Ray client server failed" after 30 s, no runtime env involved).
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0", RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S="150")
    client_port, gcs = _free_port(), _free_port()
    temp_dir = f"/tmp/steve1_rc_{os.getpid()}_{client_port}"
    script = ("import json, os\n"
              "from steve1_ray.cluster import connect\n"
              "ray = connect()\n"
              "keys = json.loads(os.environ['PIN_KEYS'])\n"
              "@ray.remote\n"
              "def worker_env():\n"
              "    return {k: os.environ.get(k) for k in keys}\n"
              "print('WORKER_ENV', json.dumps(ray.get(worker_env.remote())))\n")
    try:
        _run(["ray", "start", "--head", f"--port={gcs}", f"--ray-client-server-port={client_port}",
              "--num-cpus=1", "--include-dashboard=false", f"--dashboard-agent-listen-port={_free_port()}",
              "--object-store-memory=100000000", "--disable-usage-stats", f"--temp-dir={temp_dir}"], env, 120)
        for pinned in (True, True, False):
            driver = {**env, "RAY_ADDRESS": f"ray://127.0.0.1:{client_port}", "PIN_KEYS": json.dumps(sorted(pin)),
                      **(pin if pinned else {})}
            out = _client_run(script, driver, temp_dir)
            assert json.loads(out.split("WORKER_ENV ", 1)[1].splitlines()[0]) == dict.fromkeys(pin)
            warned = "warning: the workers of a Ray Client (ray://) driver run in the cluster nodes' environment"
            assert (warned in out) == pinned, out[-2000:]
            if pinned:
                assert "ATEN_CPU_CAPABILITY=avx2" in out and "RAY_ADDRESS=host:port" in out
    finally:
        _kill_trees(_cluster_pids(temp_dir, gcs))
        shutil.rmtree(temp_dir, ignore_errors=True)
    time.sleep(1)
    assert not _cluster_pids(temp_dir, gcs), "the test cluster's processes outlived it"
