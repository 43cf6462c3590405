"""`steve1 serve`: start the prompt-to-action service on Ray Serve and block until Ctrl-C.

    steve1 serve                                        # serve/config.yaml defaults (the released world models)
    steve1 serve --config serve/config.yaml policy=2x weights=steve1.weights device=cuda
    steve1 serve port=8001 blocking=false               # deploy and return (the app keeps running)

`--config` takes a Serve config file (its first application's `args`, and `http_options` host/port) or a plain
ServeConfig YAML; `key=value` overrides ServeConfig fields. Connects to a running cluster (RAY_ADDRESS, or one
started with `ray start`), otherwise starts a local one.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import yaml

from steve1_ray.cluster import connect, free_port
from steve1_ray.runner import Job, run_job
from steve1_ray.serving import auth
from steve1_ray.serving.config import ServeConfig

DEFAULT_CONFIG = Path(__file__).resolve().with_name("serve_config.yaml")  # package data (= serve/config.yaml)


def read_serve_yaml(path: str | Path) -> dict:
    """ServeConfig fields from a Serve config file (first application's `args` + `http_options` host/port)
    or from a plain ServeConfig YAML."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if "applications" not in data:
        return data
    apps = data["applications"] or [{}]
    http = {k: v for k, v in (data.get("http_options") or {}).items() if k in ("host", "port")}
    return {**http, **dict(apps[0].get("args") or {})}


class PortInUse(RuntimeError):
    """Serve's HTTP proxy could not bind its address (another process holds the port)."""


def start_http(host: str, port: int = 0, tries: int = 5) -> int:
    """`serve.start` with its HTTP proxy on host:port; returns the port it bound.

    `port=0` picks a free port here. The proxy binds it a moment later in its own actor, and another process can
    take the port in between (it happened beside the other CI test process), so a bind failure picks again, up to
    `tries` ports. A given port that is taken raises PortInUse (with a plain message), not Ray's traceback.
    """
    from ray import serve
    from ray.serve.context import _get_global_client

    picked = []
    for _ in range(tries if port == 0 else 1):
        picked.append(port or free_port(host))
        try:
            serve.start(http_options={"host": host, "port": picked[-1]})
            return _get_global_client().http_config.port  # Serve's own (it keeps its port if it ran already)
        except Exception as e:  # Ray wraps the proxy's RuntimeError in a RayTaskError
            if "Failed to bind to address" not in str(e):
                raise
            serve.shutdown()  # the failed proxy's controller, so the next start begins clean
    raise PortInUse(f"could not bind {host}:{', '.join(map(str, picked))}: the port is in use by another process"
                    + ("; pick another with port=..." if port else ""))


def serve_forever(cfg: ServeConfig) -> int:
    """Deploy the app on the cluster (`cluster.connect`); with `blocking`, wait for Ctrl-C / SIGTERM."""
    keys = auth.key_digests(cfg.api_keys_env, cfg.api_keys_file)  # before any cluster starts: fail fast
    auth.check_bind(cfg.host, bool(keys), cfg.insecure)
    connect()
    from ray import serve

    from steve1_ray.serving.app import build_app

    start_http(cfg.host, cfg.port)
    serve.run(build_app(cfg), name=cfg.app_name, route_prefix="/",
              logging_config={"enable_access_log": False})
    print(f"STEVE-1 service ready at http://{cfg.host}:{cfg.port}/  (API docs: /docs; "
          + (f"{len(keys)} API key(s) from ${cfg.api_keys_env}" + (f" and {cfg.api_keys_file}" if cfg.api_keys_file
                                                                     else "") if keys else "no API key")
          + f", at most {cfg.max_sessions_per_key} sessions per client)")
    if not cfg.blocking:
        return 0
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"]:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    print("shutting down (graceful: replicas finish in-flight requests)")
    serve.delete(cfg.app_name)
    return 0


JOB = Job("serve", ServeConfig, serve_forever, default_configs=[DEFAULT_CONFIG], reader=read_serve_yaml,
          errors=(auth.AuthConfigError, PortInUse),
          examples="""
          steve1 serve                                   # serve/config.yaml: the released world models on CPU, port 8000
          steve1 serve policy=2x weights=steve1.weights mineclip=attn.pth prior=steve1_prior.pt
          steve1 serve port=8001 blocking=false          # deploy and return
          STEVE1_API_KEYS=$(cat keyfile) steve1 serve host=0.0.0.0   # beyond this machine: keys required""")


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, argv)


if __name__ == "__main__":
    raise SystemExit(main())
