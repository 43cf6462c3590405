"""The Serve application running for real on a local Ray cluster (debug preset, CPU), over HTTP.

One app for the module (starting Serve costs tens of seconds on 2 cores). Its policy weights are saved
here first, so the tests can replay every session locally and compare actions exactly.
"""
from __future__ import annotations

import base64
import concurrent.futures as cf
import io
import socket
import time

import cv2
import numpy as np
import pytest
import requests
import torch

from steve1_ray import agent as A

pytestmark = pytest.mark.slow

API_KEY = "test-key-0123456789"
OTHER_KEY = "other-key-0123456789"
TTL_S = 30.0
MAX_SESSIONS = 40
PER_KEY = 30
TIMEOUT = 180


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def png_b64(img: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return base64.b64encode(data.tobytes()).decode()


class Client:
    def __init__(self, url: str, key: str | None = API_KEY):
        self.url, self.s = url, requests.Session()
        self.s.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))
        if key:
            self.s.headers["x-api-key"] = key

    def get(self, path, **kw):
        return self.s.get(self.url + path, timeout=TIMEOUT, **kw)

    def post(self, path, **kw):
        return self.s.post(self.url + path, timeout=TIMEOUT, **kw)

    def delete(self, path, **kw):
        return self.s.delete(self.url + path, timeout=TIMEOUT, **kw)


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    import os

    from ray import serve
    from ray.serve.context import _get_global_client

    from steve1_ray.models.formats import save_weights
    from steve1_ray.models.policy import build_policy
    from steve1_ray.serving.app import build_app
    from steve1_ray.serving.config import ServeConfig

    torch.manual_seed(123)
    policy = build_policy("debug").eval()
    weights = tmp_path_factory.mktemp("serve") / "debug.weights"
    save_weights(policy, weights)
    serve.start(http_options={"host": "127.0.0.1", "port": _free_port()})
    port = _get_global_client().http_config.port
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(f"# one key per line\n{OTHER_KEY}\n")
    os.environ["STEVE1_TEST_KEYS"] = API_KEY  # read once, by build_app: only digests reach the replicas
    cfg = ServeConfig(policy="debug", weights=str(weights), max_sessions=MAX_SESSIONS, session_ttl_s=TTL_S,
                      max_payload_bytes=2_000_000, max_image_pixels=1024 * 1024, api_keys_env="STEVE1_TEST_KEYS",
                      api_keys_file=str(keys), max_sessions_per_key=PER_KEY,
                      rollout_workers=1, rollout_max_steps=50, rollout_default_steps=20, video_height=180, batch_wait_timeout_s=0.01)
    serve.run(build_app(cfg), name="steve1", route_prefix="/",
              logging_config={"enable_access_log": False, "log_level": "WARNING"})
    del os.environ["STEVE1_TEST_KEYS"]
    client = Client(f"http://127.0.0.1:{port}")
    expiring = client.post("/sessions", json={"goal_embed": [0.0] * 512}).json()["session_id"]
    yield {"client": client, "policy": policy, "url": client.url, "expiring": expiring, "t_expiring": time.time()}
    serve.delete("steve1")


def _replay(policy, goal, scale, seed, observations):
    """What one session alone must produce: the original's two forward passes per step."""
    stream = A.new_stream(policy, goal, scale, seed)
    out = []
    for obs in observations:
        A.two_pass_step(policy, stream, obs)
        out.append((stream.last["buttons"], stream.last["camera"]))
    return out


def test_health_info_and_docs(served):
    c = served["client"]
    health = c.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = c.get("/info").json()
    assert info["embed_dim"] == 512 and info["auth"] is True
    assert c.get("/docs").status_code == 200
    paths = c.get("/openapi.json").json()["paths"]
    assert {"/sessions", "/sessions/{session_id}/act", "/rollouts", "/rollouts/{rollout_id}/video.mp4"} <= set(paths)


def test_api_key_required_except_public_paths(served):
    anon = Client(served["url"], key=None)
    r = anon.post("/sessions", json={"goal_embed": [0.0] * 512})
    assert r.status_code == 401 and "x-api-key" in r.json()["error"]
    assert Client(served["url"], key="wrong-key-0123456789").get("/info").status_code == 401
    assert Client(served["url"], key=OTHER_KEY).get("/info").status_code == 200  # the file's key
    assert anon.get("/healthz").status_code == 200
    page = anon.get("/")
    assert page.status_code == 200 and "Guidance scale" in page.text


def test_concurrent_sessions_match_running_alone(served):
    """12 sessions stepped concurrently (batched on the server) == each replayed alone with two passes."""
    c, policy = served["client"], served["policy"]
    rng = np.random.default_rng(5)
    n_sessions, n_steps = 12, 4
    specs = [(rng.normal(size=512).astype(np.float32), [6.0, 0.0, 3.5, 9.0][i % 4], 100 + i)
             for i in range(n_sessions)]
    obs = [[rng.integers(0, 256, (96 + 8 * i, 160, 3), dtype=np.uint8) for _ in range(n_steps)]
           for i in range(n_sessions)]
    sids = []
    for goal, scale, seed in specs:
        r = c.post("/sessions", json={"goal_embed": goal.tolist(), "cond_scale": scale, "seed": seed})
        assert r.status_code == 201, r.text
        sids.append(r.json()["session_id"])
    before = c.get("/info").json()

    def play(i):
        out = []
        for t in range(n_steps):
            r = c.post(f"/sessions/{sids[i]}/act", json={"image": png_b64(obs[i][t])})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["step"] == t + 1 and body["session_id"] == sids[i]
            out.append((body["buttons"], body["camera_bin"]))
        return out

    with cf.ThreadPoolExecutor(n_sessions) as pool:
        served_actions = list(pool.map(play, range(n_sessions)))
    for i, (goal, scale, seed) in enumerate(specs):
        assert served_actions[i] == _replay(policy, goal, scale, seed, obs[i]), f"session {i} differs"
    assert len({tuple(a) for a in served_actions}) > 1
    stats = c.get("/info").json()
    assert stats["steps"] - before["steps"] == n_sessions * n_steps
    assert stats["batches"] - before["batches"] < n_sessions * n_steps  # several sessions per forward
    for sid in sids:
        assert c.delete(f"/sessions/{sid}").status_code == 200


def test_state_survives_losing_the_replica_copy(served):
    """Drop the policy replica's hot state mid-episode: the session continues from the SessionStore."""
    from ray import serve

    c, policy = served["client"], served["policy"]
    rng = np.random.default_rng(6)
    goal = rng.normal(size=512).astype(np.float32)
    obs = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(5)]
    sid = c.post("/sessions", json={"goal_embed": goal.tolist(), "cond_scale": 6.0, "seed": 9}).json()["session_id"]
    got = []
    handle = serve.get_deployment_handle("PolicyServer", app_name="steve1")
    for t, o in enumerate(obs):
        if t == 3:
            time.sleep(1.0)  # let the state sync of step 3 land
            assert handle.options(session_id=sid).drop.remote(sid).result() is True
        raw = base64.b64encode(o.tobytes()).decode()
        body = c.post(f"/sessions/{sid}/act", json={"pixels": raw, "shape": [128, 128, 3]}).json()
        got.append((body["buttons"], body["camera_bin"]))
    assert got == _replay(policy, goal, 6.0, 9, obs)
    assert c.get(f"/sessions/{sid}").json()["steps"] == 5


def test_prompt_session_reset_and_delete(served):
    c = served["client"]
    g1 = c.post("/goals", json={"prompt": "chop down the tree", "prior_seed": 3}).json()["goal_embed"]
    g2 = c.post("/goals", json={"prompt": "chop down the tree", "prior_seed": 3}).json()["goal_embed"]
    g3 = c.post("/goals", json={"prompt": "chop down the tree", "prior_seed": 4}).json()["goal_embed"]
    assert g1 == g2 and g1 != g3 and len(g1) == 512
    r = c.post("/sessions", json={"prompt": "chop down the tree", "prior_seed": 3, "cond_scale": 6, "seed": 2})
    assert r.status_code == 201 and r.json()["prompt"] == "chop down the tree"
    sid = r.json()["session_id"]
    frames = [png_b64(np.full((64, 64, 3), v, np.uint8)) for v in (10, 200, 90)]
    first = [c.post(f"/sessions/{sid}/act", json={"image": f}).json()["buttons"] for f in frames]
    reset = c.post(f"/sessions/{sid}/reset")
    assert reset.status_code == 200 and reset.json()["steps"] == 0
    again = [c.post(f"/sessions/{sid}/act", json={"image": f}).json()["buttons"] for f in frames]
    assert again == first  # fresh memory for both streams and the generator re-seeded
    assert c.delete(f"/sessions/{sid}").status_code == 200
    gone = c.post(f"/sessions/{sid}/act", json={"image": frames[0]})
    assert gone.status_code == 404 and "POST /sessions" in gone.json()["error"]


def test_visual_goal_from_a_clip(served):
    c = served["client"]
    rng = np.random.default_rng(7)
    clip = [png_b64(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)) for _ in range(4)]
    goal = c.post("/goals", json={"clip": clip}).json()["goal_embed"]
    assert len(goal) == 512 and np.isfinite(goal).all()
    r = c.post("/sessions", json={"clip": clip, "cond_scale": 7.0})
    assert r.status_code == 201
    assert c.post(f"/sessions/{r.json()['session_id']}/act", json={"image": clip[0]}).status_code == 200
    # full-size frames are shrunk at the ingress right after decoding (to MineCLIP's 256x160, INTER_LINEAR):
    # the goal equals the one of frames shrunk the same way by the client, and a frame over the pixel cap is 413
    big = [rng.integers(0, 256, (200, 400, 3), dtype=np.uint8) for _ in range(3)]  # under max_payload_bytes
    small = [cv2.resize(f, (256, 160), interpolation=cv2.INTER_LINEAR) for f in big]
    g_big = c.post("/goals", json={"clip": [png_b64(f) for f in big]}).json()["goal_embed"]
    g_small = c.post("/goals", json={"clip": [png_b64(f) for f in small]}).json()["goal_embed"]
    assert g_big == g_small
    r = c.post("/goals", json={"clip": [png_b64(np.zeros((1100, 1000, 3), np.uint8))]})
    assert r.status_code == 413 and "clip[0]" in r.json()["error"]


def test_bad_inputs_get_4xx_that_name_the_fix(served):
    c = served["client"]
    sid = c.post("/sessions", json={"goal_embed": [0.0] * 512}).json()["session_id"]
    good = png_b64(np.zeros((32, 32, 3), np.uint8))
    cases = [
        ("bad base64", f"/sessions/{sid}/act", {"image": "not base64!!"}, 400, "base64"),
        ("not an image", f"/sessions/{sid}/act", {"image": base64.b64encode(b"hello").decode()}, 400, "image"),
        ("no observation", f"/sessions/{sid}/act", {}, 422, "image"),
        ("raw pixels wrong size", f"/sessions/{sid}/act", {"pixels": base64.b64encode(b"abc").decode(),
                                                          "shape": [2, 2, 3]}, 400, "needs 12"),
        ("unknown session", "/sessions/doesnotexist/act", {"image": good}, 404, "POST /sessions"),
        ("wrong embedding size", "/sessions", {"goal_embed": [0.1] * 10}, 422, "expects 512"),
        ("no goal", "/sessions", {"cond_scale": 6}, 422, "exactly one goal"),
        ("two goals", "/sessions", {"prompt": "dig", "goal_embed": [0.0] * 512}, 422, "exactly one goal"),
        ("empty prompt", "/sessions", {"prompt": "   "}, 422, "prompt"),
        ("absurd scale", "/sessions", {"goal_embed": [0.0] * 512, "cond_scale": 1e6}, 422, "cond_scale"),
        ("wrong type", "/sessions", {"goal_embed": "abc"}, 422, "goal_embed"),
        ("too many clip frames", "/sessions", {"clip": [good] * 17}, 422, "at most 16"),
        ("rollout too long", "/rollouts", {"prompt": "dig", "steps": 10_000}, 422, "rollout_max_steps"),
        ("unknown rollout", None, "/rollouts/nope", 404, "POST /rollouts"),
    ]
    for name, path, body, status, words in cases:
        r = c.get(body) if path is None else c.post(path, json=body)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert words in r.json()["error"], (name, r.json())
    # malformed JSON
    r = c.post(f"/sessions/{sid}/act", data=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    # oversized payload and oversized image
    r = c.post(f"/sessions/{sid}/act", json={"image": "A" * 2_100_000})
    assert r.status_code == 413 and "max_payload_bytes" in r.json()["error"]
    big = np.zeros((1100, 1100, 3), np.uint8)
    ok, jpg = cv2.imencode(".jpg", big)
    r = c.post(f"/sessions/{sid}/act", json={"image": base64.b64encode(jpg.tobytes()).decode()})
    assert r.status_code == 413 and "downscale" in r.json()["error"]
    # too many sessions
    opened, status = [], 201
    for _ in range(MAX_SESSIONS + 1):
        r = c.post("/sessions", json={"goal_embed": [0.0] * 512})
        status = r.status_code
        if status != 201:
            break
        opened.append(r.json()["session_id"])
    assert status == 429 and "max_sessions" in r.json()["error"]
    for s in opened + [sid]:
        c.delete(f"/sessions/{s}")
    # the service is still fine
    assert c.get("/healthz").json()["status"] == "ok"
    sid = c.post("/sessions", json={"goal_embed": [0.0] * 512}).json()["session_id"]
    assert c.post(f"/sessions/{sid}/act", json={"image": good}).status_code == 200
    c.delete(f"/sessions/{sid}")


def test_rollout_returns_playable_mp4_and_metrics(served):
    import av

    c = served["client"]
    r = c.post("/rollouts", json={"prompt": "collect wood", "cond_scale": 6.0, "steps": 12, "world_seed": 3})
    assert r.status_code == 202, r.text
    rid = r.json()["rollout_id"]
    assert c.get(f"/rollouts/{rid}/video.mp4").status_code in (409, 200)
    deadline = time.time() + 240
    while time.time() < deadline:
        status = c.get(f"/rollouts/{rid}").json()
        if status["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert status["status"] == "done", status
    metrics = c.get(f"/rollouts/{rid}/metrics").json()
    assert metrics["steps"] == 12 and metrics["prompt"] == "collect wood"
    assert "collect_wood" in metrics["achievements"] and "wood" in metrics["inventory"]
    video = c.get(f"/rollouts/{rid}/video.mp4")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 13 and frames[0].shape == (180, 320, 3)
    assert np.median(frames[-1][:5]) < 80  # the prompt banner (30 % brightness) across the top
    jpg = c.get(f"/rollouts/{rid}/frame.jpg")
    assert jpg.status_code == 200 and cv2.imdecode(np.frombuffer(jpg.content, np.uint8), cv2.IMREAD_COLOR) is not None


def _chromium():
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium/chromedriver not installed: run `bash scripts/install_browser.sh`")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium not installed: pip install selenium")
    return chromium, driver


@pytest.mark.browser
def test_web_page_plays_an_episode_in_headless_chromium(served, tmp_path):
    import os
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, driver_path = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,800", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        browser.set_page_load_timeout(60)
        browser.get(served["url"] + "/")
        assert "STEVE-1" in browser.title
        browser.find_element(By.ID, "apikey").send_keys(API_KEY)
        prompt = browser.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("collect wood")
        browser.execute_script("const s = document.getElementById('scale'); s.value = '8';"
                               "s.dispatchEvent(new Event('input'));")
        assert browser.find_element(By.ID, "scaleValue").text == "8"
        steps = browser.find_element(By.ID, "steps")
        steps.clear()
        steps.send_keys("15")
        browser.find_element(By.ID, "start").click()
        WebDriverWait(browser, 240, poll_frequency=0.5).until(
            lambda b: b.find_element(By.ID, "status").text in ("done", "failed"))
        assert browser.find_element(By.ID, "status").text == "done", browser.find_element(By.ID, "error").text
        assert browser.find_element(By.ID, "step").text == "15"
        WebDriverWait(browser, 30).until(
            lambda b: b.execute_script("return document.getElementById('frame').naturalWidth") > 0)
        link = browser.find_element(By.ID, "videoLink").get_attribute("href")
        assert link.endswith("/video.mp4")
        rollouts = served["client"].get("/rollouts").json()
        mine = [r for r in rollouts if r["prompt"] == "collect wood" and r["cond_scale"] == 8.0]
        assert mine and mine[-1]["status"] == "done"
        shot = tmp_path / "page.png"
        browser.save_screenshot(str(shot))
        rect = browser.find_element(By.ID, "frame").rect
    finally:
        browser.quit()
    if os.environ.get("STEVE1_SCREENSHOT_DIR"):
        shutil.copy(shot, os.environ["STEVE1_SCREENSHOT_DIR"])
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[0] >= 600 and img.shape[1] >= 1000
    x, y, w, h = (int(rect[k]) for k in ("x", "y", "width", "height"))
    view = img[y + 30:y + h - 5, x + 5:x + w - 5]  # the streamed frame, below the prompt banner
    assert view.std() > 10, "the frame area is blank: the agent's view was not shown"
    assert abs(view.astype(float).mean() - 0x11) > 5  # not the empty #111 background


def test_idle_session_expires(served):
    c = served["client"]
    wait = served["t_expiring"] + TTL_S + 1 - time.time()
    if wait > 0:
        time.sleep(wait)
    r = c.post(f"/sessions/{served['expiring']}/act", json={"image": png_b64(np.zeros((8, 8, 3), np.uint8))})
    assert r.status_code == 410 and "expired" in r.json()["error"]


def _rss_mb(title: str) -> float:
    """Resident MB of the Ray process whose title contains `title` (e.g. the proxy or the Api replica)."""
    import os

    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            if title in cmd:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            continue
    raise AssertionError(f"no process titled {title!r}")


def _watch_rss(titles: tuple[str, ...], stop) -> dict:
    """Peak RSS rise of each process while `stop` is not set (sampled every 20 ms)."""
    base = {t: _rss_mb(t) for t in titles}
    peak = dict(base)
    while not stop.is_set():
        for t in titles:
            peak[t] = max(peak[t], _rss_mb(t))
        time.sleep(0.02)
    return {t: peak[t] - base[t] for t in titles}


def test_hostile_bodies_cost_the_server_little(served):
    """A 570 KB PNG of 14000x14000 pixels, and a 256 MB chunked body without Content-Length: both 413, and
    neither the HTTP proxy nor the Api replica grows by 200 MB (before: +1.1 GB for the PNG, the whole body read)."""
    import http.client
    import threading
    from urllib.parse import urlparse

    from test_serve_hardening import png_bomb

    c = served["client"]
    sid = c.post("/sessions", json={"goal_embed": [0.0] * 512}).json()["session_id"]
    titles = ("ProxyActor", "ServeReplica:steve1:Api")
    bomb = base64.b64encode(png_bomb(14000, 14000)).decode()
    stop = threading.Event()
    with cf.ThreadPoolExecutor(1) as pool:
        watch = pool.submit(_watch_rss, titles, stop)
        r = c.post(f"/sessions/{sid}/act", json={"image": bomb})
        stop.set()
        rise = watch.result()
    assert r.status_code == 413 and "downscale" in r.json()["error"]
    assert max(rise.values()) < 200, rise

    url = urlparse(served["url"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
    chunk = b"A" * (1 << 20)
    stop = threading.Event()
    with cf.ThreadPoolExecutor(1) as pool:
        watch = pool.submit(_watch_rss, titles, stop)
        conn.putrequest("POST", f"/sessions/{sid}/act")
        conn.putheader("x-api-key", API_KEY)
        conn.putheader("content-type", "application/json")
        conn.putheader("transfer-encoding", "chunked")
        conn.endheaders()
        sent = 0
        try:
            for _ in range(256):
                conn.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
        stop.set()
        rise = watch.result()
    conn.close()
    assert status == 413 and b"max_payload_bytes" in body, (status, body[:200])
    assert max(rise.values()) < 200, (rise, sent)
    # the largest JSON body allowed, all of it numbers (JSON parsing builds a Python float per value): 422
    numbers = b'{"goal_embed": [' + b",".join([b"0.123"] * 330_000) + b"]}"
    assert len(numbers) < 2_000_000
    stop = threading.Event()
    with cf.ThreadPoolExecutor(1) as pool:
        watch = pool.submit(_watch_rss, titles, stop)
        r = c.post("/sessions", data=numbers, headers={"content-type": "application/json"})
        stop.set()
        rise = watch.result()
    assert r.status_code == 422 and "goal_embed" in r.json()["error"]
    assert max(rise.values()) < 200, rise
    assert c.post(f"/sessions/{sid}/act", json={"image": png_b64(np.zeros((32, 32, 3), np.uint8))}).status_code == 200
    c.delete(f"/sessions/{sid}")


def test_bodies_where_none_belongs_and_odd_json_get_json_4xx(served):
    c = served["client"]
    sid = c.post("/sessions", json={"goal_embed": [0.0] * 512}).json()["session_id"]
    r = c.s.request("GET", f"{served['url']}/sessions/{sid}", data=b"x" * 1000, timeout=TIMEOUT)
    assert r.status_code == 400 and "takes no request body" in r.json()["error"]
    r = c.post("/sessions", data=b"[" + b"{}," * 20_000 + b"{}]", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON objects/arrays" in r.json()["error"]
    r = c.post("/sessions", data=b'{"prompt": "\xff\xfe"}', headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and "error" in r.json()
    for method, path in (("GET", "/nowhere"), ("PUT", "/sessions")):
        r = c.s.request(method, served["url"] + path, timeout=TIMEOUT)
        assert r.status_code in (404, 405) and "error" in r.json(), (method, path, r.text)
    c.delete(f"/sessions/{sid}")


def test_numbers_are_bounded_in_the_schema_and_the_answers(served):
    """Seeds beyond 64 bits, embeddings beyond float32 and NaN literals are 422s (before: a 500, a failing first
    step, an inf goal); /openapi.json states the bounds and what every endpoint returns."""
    c = served["client"]
    cases = [
        ({"goal_embed": [0.0] * 512, "seed": 2**70}, "seed"),
        ({"prompt": "chop a tree", "prior_seed": 2**70}, "prior_seed"),
        ({"goal_embed": [0.0] * 512, "seed": -1}, "seed"),
        ({"goal_embed": [1e300] + [0.0] * 511}, "goal_embed"),
        ({"goal_embed": [0.0] * 512, "cond_scale": 51}, "cond_scale"),
        ({"prompt": "a" * 301}, "prompt"),  # CLIP reads 77 tokens; BPE of one long word is quadratic
    ]
    for body, field in cases:
        r = c.post("/sessions", json=body)
        assert r.status_code == 422 and field in r.json()["error"], (body, r.text)
    r = c.post("/sessions", data=b'{"goal_embed": [NaN' + b", 0.0" * 511 + b"]}",
               headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    r = c.post("/rollouts", json={"prompt": "dig", "world_seed": 2**40})
    assert r.status_code == 422 and "world_seed" in r.json()["error"]
    spec = c.get("/openapi.json").json()
    props = spec["components"]["schemas"]["CreateSession"]["properties"]
    seed = next(x for x in props["seed"]["anyOf"] if x.get("type") == "integer")
    assert seed["minimum"] == 0 and seed["maximum"] == pytest.approx(2**63 - 1)  # JSON reads it as a float
    scale = next(x for x in props["cond_scale"]["anyOf"] if x.get("type") == "number")
    assert scale["minimum"] == -50 and scale["maximum"] == 50
    embed = next(x for x in props["goal_embed"]["anyOf"] if x.get("type") == "array")
    assert embed["maxItems"] == 4096 and embed["items"]["maximum"] == 1e4
    act = spec["paths"]["/sessions/{session_id}/act"]["post"]["responses"]
    assert act["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ActionOut")
    assert act["413"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    for path in ("/sessions", "/goals", "/rollouts", "/info"):
        for op in spec["paths"][path].values():
            assert "schema" in op["responses"][next(k for k in op["responses"] if k.startswith("20"))].get(
                "content", {}).get("application/json", {}), (path, op)


def test_clients_see_only_their_sessions_and_rollouts_with_a_quota_each(served):
    """Two API keys: neither can read, step, reset or delete the other's sessions or see its rollouts (404, as
    for an unknown id); each may hold at most max_sessions_per_key sessions."""
    a, b = served["client"], Client(served["url"], key=OTHER_KEY)
    good = png_b64(np.zeros((32, 32, 3), np.uint8))
    sid = a.post("/sessions", json={"goal_embed": [0.0] * 512, "seed": 1}).json()["session_id"]
    for r in (b.get(f"/sessions/{sid}"), b.post(f"/sessions/{sid}/act", json={"image": good}),
              b.post(f"/sessions/{sid}/reset"), b.delete(f"/sessions/{sid}")):
        assert r.status_code == 404 and "unknown session" in r.json()["error"], r.text
    assert a.post(f"/sessions/{sid}/act", json={"image": good}).json()["step"] == 1  # untouched by b
    rid = a.post("/rollouts", json={"prompt": "collect wood", "steps": 3}).json()["rollout_id"]
    assert rid in [x["rollout_id"] for x in a.get("/rollouts").json()]
    assert rid not in [x["rollout_id"] for x in b.get("/rollouts").json()]
    for path in ("", "/metrics", "/video.mp4", "/frame.jpg"):
        assert b.get(f"/rollouts/{rid}{path}").status_code == 404, path
    opened = []
    for _ in range(PER_KEY + 1):
        r = b.post("/sessions", json={"goal_embed": [0.0] * 512})
        if r.status_code != 201:
            break
        opened.append(r.json()["session_id"])
    assert len(opened) == PER_KEY and r.status_code == 429 and "max_sessions_per_key" in r.json()["error"]
    assert a.post("/sessions", json={"goal_embed": [0.0] * 512}).status_code == 201  # a is not held up by b
    for s in opened:
        b.delete(f"/sessions/{s}")
    a.delete(f"/sessions/{sid}")
    deadline = time.time() + 60
    while a.get(f"/rollouts/{rid}").json()["status"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.5)


def test_python_client_sessions_rollouts_and_typed_errors(served):
    """steve1_ray.client against the served app: a session's actions equal the two-pass replay, a repeated step
    is answered again (never taken twice), errors are typed, a rollout gives metrics and an mp4."""
    from steve1_ray import client as C

    api = C.Client(served["url"], api_key=API_KEY)
    rng = np.random.default_rng(21)
    goal = rng.normal(size=512).astype(np.float32)
    frames = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(4)]
    with api.session(goal_embed=goal, cond_scale=6.0, seed=77) as s:
        got = []
        for f in frames:
            s.act(f)
            got.append((s.last["buttons"], s.last["camera_bin"]))
        assert got == _replay(served["policy"], goal, 6.0, 77, frames) and s.steps == 4
        s.steps = 3  # the answer of step 3 was "lost": the same step again gets the same action, no 5th step
        again = s.act(frames[3])
        assert s.last["replayed"] and again == s.last["action"] and s.steps == 4
        raw = {**C.encode_frame(frames[0])}
        for step, status in ((9, 409), (-1, 422), (2**70, 422), ("two", 422)):  # hostile step counts
            r = api.http.post(f"{served['url']}/sessions/{s.id}/act", json={**raw, "step": step}, timeout=TIMEOUT)
            assert r.status_code == status and "error" in r.json(), (step, r.text)
        assert api.info()["steps"] >= 4 and s.act(frames[0]) and s.steps == 5  # none of them stepped it
        sid = s.id
    with pytest.raises(C.NotFound):  # closed by the context manager
        api.request("GET", f"/sessions/{sid}")
    with pytest.raises(C.Unauthorized):
        C.Client(served["url"], api_key="wrong-key-0123456789").info()
    with pytest.raises(C.BadRequest, match="exactly one goal"):
        api.session()
    r = api.rollout("collect wood", steps=5, world_seed=3, poll_s=0.2)
    assert r.metrics()["steps"] == 5 and r.video()[4:8] == b"ftyp"
