"""cluster.yaml and the KubeRay manifests are valid and point at things that exist in this repo."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def test_cluster_yaml_passes_ray_launcher_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    prepared = prepare_config(cfg)
    validate_config(prepared)  # raises on a schema violation
    nodes = prepared["available_node_types"]
    assert prepared["head_node_type"] in nodes
    assert any(t["node_config"]["InstanceType"].startswith("g") for t in nodes.values()), "no GPU worker type"
    assert any("pip install" in c and "steve1_ray" in c for c in prepared["setup_commands"])


def test_cluster_yaml_unknown_key_is_rejected():
    """The validation above can fail: a typo in a top-level key is caught by the same schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    cfg["max_worker"] = 3
    with pytest.raises(Exception):
        validate_config(prepare_config(cfg))


def _load(name):
    return yaml.safe_load((REPO / "deploy" / "kuberay" / name).read_text())


def _check_cluster_spec(spec):
    head = spec["headGroupSpec"]
    assert head["template"]["spec"]["containers"][0]["image"].startswith("rayproject/ray:2.60.0")
    assert "rayStartParams" in head
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert "nvidia.com/gpu" in limits


def test_rayjob_manifest_fields_and_entrypoint():
    job = _load("rayjob-train.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    _check_cluster_spec(spec["rayClusterSpec"])
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "python" and (REPO / argv[1]).exists(), argv[1]
    cfg = argv[argv.index("--config") + 1]
    assert (REPO / cfg).exists(), cfg
    yaml.safe_load(spec["runtimeEnvYAML"])
    # the entrypoint's arguments load through the real TrainConfig (before: data_root= was refused at start)
    import subprocess
    import sys

    r = subprocess.run([sys.executable, *argv[1:], "--print-config"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "resolved config" in r.stdout, r.stderr[-2000:]


def test_rayservice_manifest_matches_serve_config():
    svc = _load("rayservice.yaml")
    assert svc["apiVersion"] == "ray.io/v1" and svc["kind"] == "RayService"
    _check_cluster_spec(svc["spec"]["rayClusterConfig"])
    serve_cfg = yaml.safe_load(svc["spec"]["serveConfigV2"])
    app = serve_cfg["applications"][0]
    local = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    assert app["import_path"] == local["applications"][0]["import_path"]
    module, attr = app["import_path"].split(":")
    import importlib

    assert hasattr(importlib.import_module(module), attr)
    from steve1_ray.config import from_dict
    from steve1_ray.serving.config import ServeConfig

    cfg = from_dict(ServeConfig, app["args"])  # every argument is a real ServeConfig field with a valid value
    assert cfg.device == "cuda" and serve_cfg["http_options"]["host"] == "0.0.0.0"
    env = svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert any(e["name"] == cfg.api_keys_env and "secretKeyRef" in e["valueFrom"] for e in env)  # it binds 0.0.0.0
