"""`steve1 serve`: start the prompt-to-action service on Ray Serve and block until Ctrl-C.

    steve1 serve                                        # serve/config.yaml defaults (debug preset)
    steve1 serve --config serve/config.yaml policy=2x weights=steve1.weights device=cuda
    steve1 serve --port 8001 --non-blocking             # deploy and return (the app keeps running)

`--config` takes a Serve config file (its first application's `args`) or a plain ServeConfig YAML;
`key=value` overrides ServeConfig fields. Connects to a running cluster (RAY_ADDRESS, or one started
with `ray start`), otherwise starts a local one.
"""
from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

import yaml

from steve1_ray.cluster import connect
from steve1_ray.config import load_config, to_dict
from steve1_ray.serving.config import ServeConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "serve" / "config.yaml"


def read_serve_yaml(path: str | Path) -> tuple[dict, dict]:
    """(ServeConfig args, http_options) from a Serve config file or a plain ServeConfig YAML."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if "applications" in data:
        apps = data["applications"] or [{}]
        return dict(apps[0].get("args") or {}), dict(data.get("http_options") or {})
    return data, {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="steve1 serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else None,
                   help="serve/config.yaml (Serve format) or a ServeConfig YAML")
    p.add_argument("--host", default=None, help="HTTP host (default: the config's, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: the config's, else 8000)")
    p.add_argument("--name", default="steve1", help="Serve application name")
    p.add_argument("--non-blocking", action="store_true", help="deploy and return")
    p.add_argument("overrides", nargs="*", help="ServeConfig overrides, key=value")
    args = p.parse_args(argv)

    base, http = read_serve_yaml(args.config) if args.config else ({}, {})
    cfg = load_config(ServeConfig, [], args.overrides, base=base)
    print("serve config:\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False))

    connect()
    from ray import serve

    from steve1_ray.serving.app import build_app

    host = args.host or http.get("host", "127.0.0.1")
    port = args.port or int(http.get("port", 8000))
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(cfg), name=args.name, route_prefix="/",
              logging_config={"enable_access_log": False})
    print(f"STEVE-1 service ready at http://{host}:{port}/  (API docs: /docs)")
    if args.non_blocking:
        return 0
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"]:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    print("shutting down (graceful: replicas finish in-flight requests)")
    serve.delete(args.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
