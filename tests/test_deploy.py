"""The deploy files work: cluster.yaml, the KubeRay manifests and the Dockerfile they run.

Everything they run is loaded through the real parsers and config classes: job entrypoints through the job itself
(`--print-config`, from another folder, as in the image), Serve configs through Serve's schema and `ServeConfig`,
`ray start` flags through Ray's own command-line parser, runtime envs through `RuntimeEnv`'s fields. The image they
name is the one scripts/build_image.sh builds from the Dockerfile, on the Ray and Python the tests run, installed
by scripts/install.sh, the script scripts/setup.sh runs for the tests. Docker itself is not needed.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = (REPO / "pyproject.toml").read_text()
VERSION = re.search(r'^version = "([^"]+)"$', PYPROJECT, re.M).group(1)
IMAGE_NAME = "steve1-ray"
LAUNCHER_COMMANDS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                     "head_start_ray_commands", "worker_start_ray_commands")


def _pin(package: str) -> str:
    """The version pyproject.toml pins a dependency to (`"ray[...]==2.60.0"` -> 2.60.0)."""
    m = re.search(rf'^\s*"{package}(\[[^\]]*\])?==([\w.]+)"', PYPROJECT, re.M)
    assert m, f"pyproject.toml does not pin {package}"
    return m.group(2)


def _load(name):
    return yaml.safe_load((REPO / "deploy" / "kuberay" / name).read_text())


def _cluster_yaml() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


# ------------------------------------------------------------------ loading what the files run, for real

def _check_job_command(argv: list[str], where: str, tmp_path: Path) -> str:
    """`steve1 <job> ...` or `python jobs/<x>.py ...`: the job resolves its config (--print-config) from a folder
    other than the checkout, as it does in the image. Returns the printed config."""
    if argv[0] == "steve1":
        assert 'steve1 = "steve1_ray.cli:main"' in PYPROJECT, where
        cmd = [sys.executable, "-m", "steve1_ray.cli", *argv[1:]]
    else:
        assert argv[0] == "python" and (REPO / argv[1]).is_file(), f"{where}: {argv[1]} does not exist"
        cmd = [sys.executable, str(REPO / argv[1]), *argv[2:]]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([*cmd, "--print-config"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "resolved config" in r.stdout, f"{where}: {shlex.join(argv)}\n{r.stderr[-2000:]}"
    return r.stdout


def _strict(schema, data: dict, where: str):
    """Validate with a pydantic schema of Serve, refusing keys it does not know (Serve itself ignores them)."""
    unknown = set(data) - set(schema.model_fields)
    assert not unknown, f"{where}: unknown keys {sorted(unknown)}; {schema.__name__} knows {sorted(schema.model_fields)}"
    return schema.model_validate(data)


def _check_serve_config(serve_cfg: dict, where: str):
    """A Serve config (serve/config.yaml, a RayService's serveConfigV2): Serve's schema, and every application's
    `args` through ServeConfig."""
    from ray.serve.schema import HTTPOptionsSchema, ServeApplicationSchema, ServeDeploySchema

    from steve1_ray.config import from_dict
    from steve1_ray.serving.config import ServeConfig

    _strict(ServeDeploySchema, serve_cfg, where)
    _strict(HTTPOptionsSchema, serve_cfg.get("http_options", {}), f"{where} http_options")
    configs = []
    for app in serve_cfg["applications"]:
        _strict(ServeApplicationSchema, app, f"{where} application {app.get('name')}")
        if "runtime_env" in app:
            _check_runtime_env(app["runtime_env"], where)
        cfg = from_dict(ServeConfig, app.get("args", {}))  # unknown keys and bad values raise
        for d in app.get("deployments", []):  # a cap below every session's step parks steps in Serve's router
            floor = cfg.ongoing_limits().get(d["name"])
            if floor and "max_ongoing_requests" in d:
                assert d["max_ongoing_requests"] >= floor, (
                    f"{where}: {d['name']} max_ongoing_requests {d['max_ongoing_requests']} < {floor}, "
                    f"ServeConfig.ongoing_limits() for max_sessions {cfg.max_sessions}")
        configs.append(cfg)
    return configs


def _check_runtime_env(runtime_env: dict, where: str):
    from ray.runtime_env import RuntimeEnv

    unknown = set(runtime_env) - RuntimeEnv.known_fields
    assert not unknown, f"{where}: unknown runtime_env fields {sorted(unknown)}"
    RuntimeEnv(**runtime_env)


def _check_ray_command(argv: list[str], where: str):
    """`ray start ...` / `ray stop ...`: parsed (not run) by Ray's own click commands: unknown flags and bad values
    raise."""
    from ray.scripts import scripts

    assert argv[0] == "ray" and argv[1] in ("start", "stop"), f"{where}: {shlex.join(argv)}"
    command = getattr(scripts, argv[1])
    return command.make_context(argv[1], argv[2:]).params


def _check_start_params(params: dict, head: bool, where: str):
    """A KubeRay group's rayStartParams are `ray start` flags (KubeRay adds --head/--address itself)."""
    argv = ["ray", "start", *(["--head"] if head else ["--address=head:6379"])]
    argv += [f"--{key}" if value == "" else f"--{key}={value}" for key, value in params.items()]
    return _check_ray_command(argv, where)


def _check_paths_reachable(values: dict, mounts: list[str], where: str):
    """Every path in a job's resolved config or a Serve app's args is a URI (s3://...) or lies on a volume the
    pods mount: the image has no checkout and no data of its own (a relative path would name nothing)."""
    for key, value in values.items():
        if isinstance(value, str) and "/" in value and "://" not in value:
            assert value.startswith("/") and any(value.startswith(m.rstrip("/") + "/") for m in mounts), \
                f"{where}: {key}={value} is neither a URI nor on a mounted volume ({mounts})"


def _worker_mounts(spec) -> list[str]:
    return [m["mountPath"] for group in spec["workerGroupSpecs"]
            for c in group["template"]["spec"]["containers"] for m in c.get("volumeMounts", [])]


def _check_launcher_command(command: str, where: str, tmp_path: Path):
    """One command of cluster.yaml: each kind the file may run is loaded the way it will be run; others fail."""
    argv = shlex.split(command)
    if argv[0] == "ray":
        _check_ray_command(argv, where)
    elif argv[0] == "steve1" or (argv[0] == "python" and argv[1].startswith("jobs/")):
        _check_job_command(argv, where, tmp_path)
    elif argv[0] == "serve" and argv[1] in ("deploy", "run"):
        path = next(a for a in argv[2:] if a.endswith(".yaml"))
        _check_serve_config(yaml.safe_load((REPO / path).read_text()), f"{where}: {path}")
    else:
        raise AssertionError(f"{where}: {command!r} is a command tests/test_deploy.py cannot load; installs belong "
                             "in the image (scripts/install.sh), other commands need a check here")


# ------------------------------------------------------------------ cluster.yaml

def test_cluster_yaml_passes_ray_launcher_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(_cluster_yaml())
    validate_config(prepared)  # raises on a schema violation
    nodes = prepared["available_node_types"]
    assert prepared["head_node_type"] in nodes
    assert any(t["node_config"]["InstanceType"].startswith("g") for t in nodes.values()), "no GPU worker type"


def test_cluster_yaml_unknown_key_is_rejected():
    """The validation above can fail: a typo in a top-level key is caught by the same schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = _cluster_yaml()
    cfg["max_worker"] = 3
    with pytest.raises(Exception):
        validate_config(prepare_config(cfg))


def test_every_cluster_yaml_command_loads(tmp_path):
    """Every command cluster.yaml runs (setup, start, per node type) is loaded through what will run it: `ray
    start` flags through Ray's parser, jobs through their config, Serve configs through Serve and ServeConfig."""
    cfg = _cluster_yaml()
    sections = [(key, cfg.get(key) or []) for key in LAUNCHER_COMMANDS]
    for name, node in cfg["available_node_types"].items():
        sections += [(f"available_node_types.{name}.{key}", node.get(key) or []) for key in LAUNCHER_COMMANDS]
    commands = [(f"cluster.yaml {key}[{i}]", c) for key, cs in sections for i, c in enumerate(cs)]
    assert any("ray start" in c for _, c in commands)
    for where, command in commands:
        _check_launcher_command(command, where, tmp_path)
    head = _check_ray_command(shlex.split(cfg["head_start_ray_commands"][-1]), "head_start_ray_commands")
    assert head["head"] and head["port"] == 6379 and head["dashboard_host"] == "0.0.0.0"


def test_launcher_command_checks_can_fail(tmp_path):
    """The checks above refuse what would fail on the cluster: a misspelt `ray start` flag, a job key its config
    does not have, a command they cannot load (an install at start instead of in the image)."""
    import click

    with pytest.raises(click.NoSuchOption):
        _check_launcher_command("ray start --head --dashbord-host=0.0.0.0", "test", tmp_path)
    with pytest.raises(AssertionError, match=r"unknown key\(s\) \['data_root'\]"):
        _check_launcher_command("steve1 train --config paper data_root=s3://b/shards", "test", tmp_path)
    with pytest.raises(AssertionError, match="cannot load"):
        _check_launcher_command("pip install -q -e /home/ray/steve1_ray", "test", tmp_path)


# ------------------------------------------------------------------ KubeRay

def _check_cluster_spec(spec, where: str):
    assert spec["rayVersion"] == _pin("ray"), f"{where}: rayVersion {spec['rayVersion']} but pyproject pins Ray {_pin('ray')}"
    head = spec["headGroupSpec"]
    _check_start_params(head["rayStartParams"], True, f"{where} head rayStartParams")
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        _check_start_params(group["rayStartParams"], False, f"{where} {group['groupName']} rayStartParams")
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert "nvidia.com/gpu" in limits


def _images(node) -> list[str]:
    """Every `image:` anywhere in a manifest or config."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "image" and isinstance(v, str)] + \
            [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def test_rayjob_manifest_fields_and_entrypoint(tmp_path):
    job = _load("rayjob-train.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    _check_cluster_spec(spec["rayClusterSpec"], "rayjob-train.yaml")
    _check_runtime_env(yaml.safe_load(spec["runtimeEnvYAML"]), "rayjob-train.yaml runtimeEnvYAML")
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "steve1", "the image has the package, not the checkout: run the `steve1` command"
    # the entrypoint's arguments load through the real job and TrainConfig (before: data_root= was refused at start)
    printed = yaml.safe_load(_check_job_command(argv, "rayjob-train.yaml entrypoint", tmp_path).split(
        "resolved config:", 1)[1])
    assert printed["use_gpu"] is True and printed["num_workers"] == 4 and printed["storage_path"].startswith("s3://")
    _check_paths_reachable(printed, _worker_mounts(spec["rayClusterSpec"]), "rayjob-train.yaml entrypoint")


def test_rayservice_manifest_matches_serve_config():
    svc = _load("rayservice.yaml")
    assert svc["apiVersion"] == "ray.io/v1" and svc["kind"] == "RayService"
    _check_cluster_spec(svc["spec"]["rayClusterConfig"], "rayservice.yaml")
    serve_cfg = yaml.safe_load(svc["spec"]["serveConfigV2"])
    [cfg] = _check_serve_config(serve_cfg, "rayservice.yaml serveConfigV2")
    local = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    _check_serve_config(local, "serve/config.yaml")
    app = serve_cfg["applications"][0]
    assert app["import_path"] == local["applications"][0]["import_path"]
    module, attr = app["import_path"].split(":")
    import importlib

    assert hasattr(importlib.import_module(module), attr)
    assert "runtime_env" not in app, "the image has the package: no working_dir to download"
    assert cfg.device == "cuda" and serve_cfg["http_options"]["host"] == "0.0.0.0"
    _check_paths_reachable(app["args"], _worker_mounts(svc["spec"]["rayClusterConfig"]), "rayservice.yaml args")
    env = svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert any(e["name"] == cfg.api_keys_env and "secretKeyRef" in e["valueFrom"] for e in env)  # it binds 0.0.0.0


def test_manifest_checks_can_fail():
    """Serve's schema ignores unknown keys and KubeRay passes rayStartParams through: the checks above do not."""
    import click

    serve_cfg = yaml.safe_load(_load("rayservice.yaml")["spec"]["serveConfigV2"])
    with pytest.raises(AssertionError, match="unknown keys"):
        _check_serve_config({**serve_cfg, "proxy_locaton": "EveryNode"}, "test")
    app = {**serve_cfg["applications"][0], "args": {**serve_cfg["applications"][0]["args"], "max_sesions": 1}}
    with pytest.raises(Exception, match="max_sesions"):
        _check_serve_config({**serve_cfg, "applications": [app]}, "test")
    with pytest.raises(click.NoSuchOption):
        _check_start_params({"num-cpu": "0"}, True, "test")
    with pytest.raises(AssertionError, match="runtime_env"):
        _check_runtime_env({"workingdir": "x"}, "test")
    with pytest.raises(AssertionError, match="in_weights=data/weights"):  # the paper preset's default, relative
        _check_paths_reachable({"in_weights": "data/weights/vpt/rl-from-foundation-2x.weights"}, ["/models"], "test")
    with pytest.raises(AssertionError, match="mounted volume"):
        _check_paths_reachable({"weights": "/data/steve1.weights"}, ["/models"], "test")


# ------------------------------------------------------------------ the image

def _dockerfile() -> tuple[list[str], list[tuple[str, str]]]:
    """(FROM images with ARG defaults resolved, [(instruction, arguments)]) of the Dockerfile."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    steps = [tuple(line.strip().split(None, 1)) for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    args = {}
    for op, rest in steps:
        if op == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args.setdefault(key, value)
    stages, froms = set(), []
    for op, rest in steps:
        if op == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], words[0])
            froms.append(image if image not in stages else f"stage:{image}")
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    return froms, steps


def test_dockerfile_builds_on_the_ray_and_python_the_tests_run():
    froms, _ = _dockerfile()
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    want = f"rayproject/ray:{_pin('ray')}-{python}-gpu"
    assert froms and all(f == want for f in froms), \
        f"Dockerfile builds on {froms}; the tests run Ray {_pin('ray')} on Python {python[2]}.{python[3:]}: {want}"


def test_dockerfile_installs_with_the_script_setup_runs():
    """Its only install steps are scripts/install.sh (wheel, then image), the script scripts/setup.sh runs; every
    file it copies is in the build context that .dockerignore lets through."""
    _, steps = _dockerfile()
    runs = [rest for op, rest in steps if op == "RUN"]
    installs = [r for r in runs if "install.sh" in r]
    assert [shlex.split(r)[:3] for r in installs] == [["bash", "scripts/install.sh", "wheel"],
                                                      ["bash", "/home/ray/install.sh", "image"]], installs
    assert all(r in installs or shlex.split(r)[:2] == ["mkdir", "-p"] for r in runs), runs
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for op, rest in steps:
        if op == "COPY" and "--from=" not in rest:
            sources = [w for w in rest.split() if not w.startswith("--")][:-1]
            for src in sources:
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
                assert any(src == a or src.startswith(a + "/") for a in allowed), f".dockerignore leaves out {src}"
    assert "scripts/install.sh dev" in (REPO / "scripts" / "setup.sh").read_text()


def _norm(name: str) -> str:
    """A distribution name as pip compares them (PEP 503: case and runs of `-_.` do not matter)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraints(text: str) -> dict[str, str]:
    """constraints.txt's pins, by normalised name; any line that is not a comment or `name==version` fails."""
    pins = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([\w.+!-]+)", line.strip())
            assert m, f"constraints.txt: {line!r} is not name==version"
            name = _norm(m.group(1))
            assert name not in pins, f"constraints.txt pins {name} twice"
            pins[name] = m.group(2)
    return pins


def _unpinned(pyproject: str, pins: dict[str, str]) -> list[str]:
    """pyproject.toml's requirements (dependencies and the test extra) that constraints.txt does not pin, or pins to
    another version than pyproject.toml's own `==`. torch is pinned by install.sh itself."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads(pyproject)["project"]
    wrong = []
    for req in project["dependencies"] + project["optional-dependencies"]["test"]:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(==\s*([\w.]+))?", req)
        name = _norm(m.group(1))
        if name == "torch":
            continue
        if name not in pins or (m.group(4) and pins[name] != m.group(4)):
            wrong.append(req)
    return wrong


def test_constraints_pin_every_requirement_at_pyprojects_version():
    """The development install (scripts/install.sh dev) takes every package at constraints.txt's version: the file
    pins each requirement of pyproject.toml, at pyproject.toml's version where that pins one (and their own
    requirements besides)."""
    pins = _constraints((REPO / "constraints.txt").read_text())
    assert "torch" not in pins and "steve1-ray" not in pins  # pinned by install.sh / the checkout itself
    assert _unpinned(PYPROJECT, pins) == []
    # the checks can fail: a requirement missing, a pin that disagrees, a range
    assert _unpinned(PYPROJECT.replace('"pyyaml",', '"pyyaml", "not-a-package",'), pins) == ["not-a-package"]
    assert _unpinned(PYPROJECT, {**pins, "ray": "2.59.0"}) == ["ray[train,data,tune,serve]==2.60.0"]
    with pytest.raises(AssertionError, match="name==version"):
        _constraints("numpy>=2\n")
    # what a hand edit or a careless freeze could leave: pip options, URLs, editables, markers, a name twice
    for bad in ("--index-url https://evil.example/simple", "-r other.txt", "-e .", "numpy @ https://x/n.whl",
                'numpy==2.4.6; python_version < "3.12"', "numpy==2.4.6 --hash=sha256:00"):
        with pytest.raises(AssertionError, match="name==version"):
            _constraints(bad + "\n")
    with pytest.raises(AssertionError, match="twice"):
        _constraints("NumPy==2.4.6\nnumpy==2.4.5\n")


def _fake(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """An executable that records each call's arguments (one line each, shell-quoted) and does nothing else."""
    log = tmp_path / f"{name}.calls"
    exe = tmp_path / "bin" / name
    exe.parent.mkdir(exist_ok=True)
    exe.write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" >> {shlex.quote(str(log))}\necho >> {shlex.quote(str(log))}\n')
    exe.chmod(0o755)
    return exe, log


def _calls(log: Path) -> list[list[str]]:
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_install_steps_are_one_script_for_setup_and_image(tmp_path):
    """scripts/install.sh, run with a recording `python`: torch (pyproject's pin) first and alone, then the project
    (editable with the test extras for setup.sh, the wheel for the image). setup.sh runs its dev steps."""
    python, log = _fake(tmp_path, "python")
    torch = f"torch=={_pin('torch')}"
    subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "image", str(python), "/w/steve1_ray.whl"],
                   check=True, timeout=60)
    assert _calls(log) == [["-m", "pip", "install", "-q", "--no-cache-dir", torch],
                           ["-m", "pip", "install", "-q", "--no-cache-dir", "/w/steve1_ray.whl"]]
    log.unlink()
    subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "wheel", str(python), "/w/dist"], check=True,
                   timeout=60)
    assert _calls(log) == [["-m", "pip", "wheel", "-q", "--no-deps", "-w", "/w/dist", str(REPO)]]
    log.unlink()
    venv = tmp_path / "venv"  # a "venv" whose python is the recorder: setup.sh creates nothing, installs nothing
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(python)
    subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), str(venv)], check=True, timeout=60,
                   capture_output=True)
    calls = _calls(log)
    assert calls[1] == ["-m", "pip", "install", "-q", torch], calls
    assert ["-m", "pip", "install", "-q", "-c", f"{REPO}/constraints.txt", "-e", f"{REPO}[test]"] in calls[2:], calls
    # on another Python than constraints.txt was frozen on (the version check exits 1), no pins, and it says so
    log.unlink()
    other = tmp_path / "bin" / "python310"
    other.write_text(python.read_text().replace("\n", '\n[ "$1" = -c ] && exit 1\n', 1))
    other.chmod(0o755)
    r = subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "dev", str(other)], capture_output=True,
                       text=True, timeout=60, check=True)
    assert ["-m", "pip", "install", "-q", "-e", f"{REPO}[test]"] in _calls(log), _calls(log)
    assert "unpinned" in r.stderr
    r = subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "docker", str(python)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "dev, wheel or image" in r.stderr


def test_manifests_run_the_image_build_image_builds(tmp_path):
    """cluster.yaml and every KubeRay pod name one image, <registry>/steve1-ray:<pyproject version>, and
    scripts/build_image.sh (with a recording `docker`) builds exactly that tag from the Dockerfile and pushes it."""
    images = _images(_cluster_yaml()) + _images(_load("rayjob-train.yaml")) + _images(_load("rayservice.yaml"))
    assert len(images) == 5 and len(set(images)) == 1, images
    [image] = set(images)
    registry, tag = image.rsplit("/", 1)
    assert tag == f"{IMAGE_NAME}:{VERSION}", f"manifests run {image}; the image of version {VERSION} is {IMAGE_NAME}:{VERSION}"
    docker, log = _fake(tmp_path, "docker")
    r = subprocess.run(["bash", str(REPO / "scripts" / "build_image.sh"), registry], capture_output=True, text=True,
                       env={**os.environ, "DOCKER": str(docker)}, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == image, r.stderr
    assert _calls(log) == [["build", "-t", image, "-f", "Dockerfile", "."], ["push", image]]
