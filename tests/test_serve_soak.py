"""Sessions across policy replicas, for real: two PolicyServer replicas behind Serve's default router (no
sticky sessions, so a session's steps alternate between them), 6 sessions stepping concurrently, and one
replica killed mid-load with `ray.kill`. Every session must finish, with actions equal to an uninterrupted run
(each session replayed alone with the original's two forward passes). Clients retry a 503 or a dropped
connection with the same `step`, so a step whose answer was lost is answered again, not taken twice."""
from __future__ import annotations

import base64
import concurrent.futures as cf
import threading
import time

import numpy as np
import pytest
import requests
import torch

from test_serve import _replay

pytestmark = pytest.mark.slow
N_SESSIONS, N_STEPS, KILL_AFTER = 6, 12, 4


def test_sessions_survive_a_killed_replica_and_stay_exact(ray_cluster, tmp_path):
    import ray
    from ray import serve

    from steve1_ray.models.formats import save_weights
    from steve1_ray.models.policy import build_policy
    from steve1_ray.serving.app import build_app
    from steve1_ray.serving.config import ServeConfig
    from steve1_ray.serving.run import start_http

    torch.manual_seed(321)
    policy = build_policy("debug").eval()
    weights = tmp_path / "debug.weights"
    save_weights(policy, weights)
    url = f"http://127.0.0.1:{start_http('127.0.0.1')}"
    cfg = ServeConfig(policy="debug", weights=str(weights), sticky_sessions=False, state_sync_every=1,
                      rollout_workers=0, batch_wait_timeout_s=0.002)
    serve.run(build_app(cfg, policy_options={"num_replicas": 2}), name="soak", route_prefix="/",
              logging_config={"enable_access_log": False, "log_level": "WARNING"})
    try:
        rng = np.random.default_rng(11)
        specs = [(rng.normal(size=512).astype(np.float32), [6.0, 0.0, 3.0][i % 3], 500 + i) for i in range(N_SESSIONS)]
        obs = [[rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(N_STEPS)] for _ in specs]
        s = requests.Session()
        sids = [s.post(f"{url}/sessions", json={"goal_embed": g.tolist(), "cond_scale": c, "seed": seed},
                       timeout=120).json()["session_id"] for g, c, seed in specs]
        progress = [0] * N_SESSIONS
        retried = {"503": 0, "conn": 0, "replayed": 0, "409": 0}
        lock = threading.Lock()

        def play(i):
            out, sess = [], requests.Session()
            for t in range(N_STEPS):
                body = {"pixels": base64.b64encode(obs[i][t].tobytes()).decode(), "shape": [128, 128, 3], "step": t}
                for attempt in range(60):
                    try:
                        r = sess.post(f"{url}/sessions/{sids[i]}/act", json=body, timeout=120)
                    except requests.ConnectionError:
                        with lock:
                            retried["conn"] += 1
                        time.sleep(0.5)
                        continue
                    if r.status_code in (503, 409):
                        with lock:
                            retried[str(r.status_code)] += 1
                        time.sleep(0.5)
                        continue
                    assert r.status_code == 200, (i, t, r.status_code, r.text)
                    a = r.json()
                    with lock:
                        retried["replayed"] += bool(a.get("replayed"))
                    assert a["step"] == t + 1
                    out.append((a["buttons"], a["camera_bin"]))
                    break
                else:
                    raise AssertionError(f"session {i} step {t}: no answer after 60 tries")
                progress[i] = t + 1
            return out

        with cf.ThreadPoolExecutor(N_SESSIONS) as pool:
            futures = [pool.submit(play, i) for i in range(N_SESSIONS)]
            while min(progress) < KILL_AFTER:
                time.sleep(0.05)
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                     if "PolicyServer" in a["name"] and "soak" in a["name"]]
            assert len(names) == 2, names
            ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)  # mid-load
            killed_at = list(progress)
            got = [f.result(timeout=600) for f in futures]
        assert max(killed_at) < N_STEPS  # the kill landed while sessions were still playing
        for i, (goal, scale, seed) in enumerate(specs):
            assert got[i] == _replay(policy, goal, scale, seed, obs[i]), f"session {i} diverged"
        print("retries:", retried, "progress at the kill:", killed_at)
        assert s.get(f"{url}/healthz", timeout=60).status_code == 200

        # the session store dies (its sessions with it): Serve restarts it; old ids answer 410, not 404
        store = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if "SessionStore" in a["name"] and "soak" in a["name"]]
        ray.kill(ray.get_actor(store[0], namespace="serve"), no_restart=True)
        deadline, r = time.time() + 120, None
        while time.time() < deadline:
            r = s.get(f"{url}/sessions/{sids[0]}", timeout=60)
            assert r.headers["content-type"].startswith("application/json"), r.text  # never a bare 500
            if r.status_code == 503:
                assert r.headers.get("retry-after")
            if r.status_code != 503:
                break
            time.sleep(0.5)
        assert r.status_code == 410 and "restarted" in r.json()["error"], r.text
        new = s.post(f"{url}/sessions", json={"goal_embed": specs[0][0].tolist()}, timeout=60)
        assert new.status_code == 201
    finally:
        serve.delete("soak")
