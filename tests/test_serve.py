"""The Serve application running for real on a local Ray cluster (debug preset, CPU), over HTTP.

One app for the module (starting Serve costs tens of seconds on 2 cores). Its policy weights are saved
here first, so the tests can replay every session locally and compare actions exactly. The tests speak to it
through `steve1_ray.client.Client`, as users do; `RawClient` (plain requests) is kept for what that client
never sends: malformed bodies, hostile values, clips and encoded images.
"""
from __future__ import annotations

import base64
import concurrent.futures as cf
import io
import time

import cv2
import numpy as np
import pytest
import requests
import torch

from steve1_ray import agent as A
from steve1_ray import client as C

pytestmark = pytest.mark.slow

API_KEY = "test-key-0123456789"
OTHER_KEY = "other-key-0123456789"
TTL_S = 30.0
MAX_SESSIONS = 40
PER_KEY = 30
TIMEOUT = 180


def png_b64(img: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return base64.b64encode(data.tobytes()).decode()


class RawClient:
    """Plain HTTP, for requests steve1_ray.client never sends (bad bodies, hostile values, clips, encoded images)."""

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

    from steve1_ray.models.formats import save_weights
    from steve1_ray.models.policy import build_policy
    from steve1_ray.serving.app import build_app
    from steve1_ray.serving.config import ServeConfig
    from steve1_ray.serving.run import start_http

    torch.manual_seed(123)
    policy = build_policy("debug").eval()
    weights = tmp_path_factory.mktemp("serve") / "debug.weights"
    save_weights(policy, weights)
    port = start_http("127.0.0.1")
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(f"# one key per line\n{OTHER_KEY}\n")
    os.environ["STEVE1_TEST_KEYS"] = API_KEY  # read once, by build_app: only digests reach the replicas
    cfg = ServeConfig(policy="debug", weights=str(weights), max_sessions=MAX_SESSIONS, session_ttl_s=TTL_S,
                      max_payload_bytes=2_000_000, max_image_pixels=1024 * 1024, api_keys_env="STEVE1_TEST_KEYS",
                      api_keys_file=str(keys), max_sessions_per_key=PER_KEY,
                      rollout_workers=1, rollout_max_steps=50, rollout_default_steps=20, video_height=180,
                      batch_wait_timeout_s=0.01, torch_threads=2)
    serve.run(build_app(cfg), name="steve1", route_prefix="/",
              logging_config={"enable_access_log": False, "log_level": "WARNING"})
    del os.environ["STEVE1_TEST_KEYS"]
    url = f"http://127.0.0.1:{port}"
    api = C.Client(url, api_key=API_KEY, timeout=TIMEOUT)
    expiring = api.session(goal_embed=np.zeros(512, np.float32))
    yield {"api": api, "client": RawClient(url), "policy": policy, "url": url, "expiring": expiring,
           "t_expiring": time.time()}
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
    api = served["api"]
    assert api.request("GET", "/healthz")["status"] == "ok"
    info = api.info()
    assert info["embed_dim"] == 512 and info["auth"] is True
    assert info["torch_threads"] == 2  # ServeConfig.torch_threads, not the 1 thread Ray gives a 0.5-CPU replica
    assert {"step_s", "claim_s", "sync_s", "fill_s", "idle_s", "batch_wait_s"} <= set(info)  # where its time goes
    assert info["max_inflight_bytes"] == 512 * 1024 * 1024  # the request-body budget an operator sizes against
    assert b"swagger" in api.request("GET", "/docs").lower()
    paths = api.request("GET", "/openapi.json")["paths"]
    assert {"/sessions", "/sessions/{session_id}/act", "/rollouts", "/rollouts/{rollout_id}/video.mp4"} <= set(paths)


def test_api_key_required_except_public_paths(served):
    anon = C.Client(served["url"], api_key="")  # no key (not even $STEVE1_API_KEY)
    with pytest.raises(C.Unauthorized, match="x-api-key"):
        anon.session(goal_embed=np.zeros(512, np.float32))
    with pytest.raises(C.Unauthorized):
        C.Client(served["url"], api_key="wrong-key-0123456789").info()
    assert C.Client(served["url"], api_key=OTHER_KEY).info()["auth"] is True  # the file's key
    assert anon.request("GET", "/healthz")["status"] == "ok"
    assert b"Guidance scale" in anon.request("GET", "/")  # the page


def test_concurrent_sessions_match_running_alone(served):
    """12 sessions stepped concurrently (batched on the server) == each replayed alone with two passes."""
    api, policy = served["api"], served["policy"]
    rng = np.random.default_rng(5)
    n_sessions, n_steps = 12, 4
    specs = [(rng.normal(size=512).astype(np.float32), [6.0, 0.0, 3.5, 9.0][i % 4], 100 + i)
             for i in range(n_sessions)]
    obs = [[rng.integers(0, 256, (96 + 8 * i, 160, 3), dtype=np.uint8) for _ in range(n_steps)]
           for i in range(n_sessions)]
    sessions = [api.session(goal_embed=goal, cond_scale=scale, seed=seed) for goal, scale, seed in specs]
    before = api.info()

    def play(i):
        s, out = sessions[i], []
        for t in range(n_steps):
            s.act(obs[i][t])
            assert s.steps == t + 1 and s.last["session_id"] == s.id
            out.append((s.last["buttons"], s.last["camera_bin"]))
        return out

    with cf.ThreadPoolExecutor(n_sessions) as pool:
        served_actions = list(pool.map(play, range(n_sessions)))
    for i, (goal, scale, seed) in enumerate(specs):
        assert served_actions[i] == _replay(policy, goal, scale, seed, obs[i]), f"session {i} differs"
    assert len({tuple(a) for a in served_actions}) > 1
    stats = api.info()
    assert stats["steps"] - before["steps"] == n_sessions * n_steps
    assert stats["batches"] - before["batches"] < n_sessions * n_steps  # several sessions per forward
    # the replica counted its time (the wait's formula: test_serve_units), and its wait stays within its bounds
    assert stats["step_s"] > before["step_s"] and stats["claim_s"] > before["claim_s"]
    assert 0.01 <= stats["batch_wait_s"] <= 0.5
    # a batch takes one of two groups of the active sessions (batch_groups 2), not max_batch_size (16)
    assert 1 <= stats["batch_size"] <= -(-n_sessions // 2)
    for s in sessions:
        api.request("DELETE", f"/sessions/{s.id}")


def test_state_survives_losing_the_replica_copy(served):
    """Drop the policy replica's hot state mid-episode: the session continues from the SessionStore."""
    from ray import serve

    api, policy = served["api"], served["policy"]
    rng = np.random.default_rng(6)
    goal = rng.normal(size=512).astype(np.float32)
    obs = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(5)]
    s = api.session(goal_embed=goal, cond_scale=6.0, seed=9)
    got = []
    handle = serve.get_deployment_handle("PolicyServer", app_name="steve1")
    for t, o in enumerate(obs):
        if t == 3:
            time.sleep(1.0)  # let the state sync of step 3 land
            assert handle.options(session_id=s.id).drop.remote(s.id).result() is True
        s.act(o)
        got.append((s.last["buttons"], s.last["camera_bin"]))
    assert got == _replay(policy, goal, 6.0, 9, obs)
    assert api.request("GET", f"/sessions/{s.id}")["steps"] == 5


def test_prompt_session_reset_and_delete(served):
    api = served["api"]
    g1, g2 = api.goal("chop down the tree", prior_seed=3), api.goal("chop down the tree", prior_seed=3)
    g3 = api.goal("chop down the tree", prior_seed=4)
    assert np.array_equal(g1, g2) and not np.array_equal(g1, g3) and g1.shape == (512,)
    s = api.session(prompt="chop down the tree", prior_seed=3, cond_scale=6, seed=2)
    assert s.info["prompt"] == "chop down the tree"
    frames = [np.full((64, 64, 3), v, np.uint8) for v in (10, 200, 90)]
    first = [(s.act(f), s.last["buttons"])[1] for f in frames]
    assert s.reset()["steps"] == 0 and s.steps == 0
    again = [(s.act(f), s.last["buttons"])[1] for f in frames]
    assert again == first  # fresh memory for both streams and the generator re-seeded
    api.request("DELETE", f"/sessions/{s.id}")
    with pytest.raises(C.NotFound, match="POST /sessions"):
        s.act(frames[0])


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

    api = served["api"]
    rollout = api.rollout("collect wood", cond_scale=6.0, steps=12, world_seed=3, wait=False)
    assert rollout.status["status"] in ("queued", "running", "done")
    try:
        assert rollout.video()[4:8] == b"ftyp"  # done already
    except C.Conflict as e:
        assert "once status is 'done'" in e.message  # not yet
    assert rollout.wait(poll_s=0.5, timeout_s=240)["status"] == "done"
    metrics = rollout.metrics()
    assert metrics["steps"] == 12 and metrics["prompt"] == "collect wood"
    assert "collect_wood" in metrics["achievements"] and "wood" in metrics["inventory"]
    video = api.http.get(f"{served['url']}/rollouts/{rollout.id}/video.mp4", timeout=TIMEOUT)
    assert video.headers["content-type"] == "video/mp4" and video.content == rollout.video()
    with av.open(io.BytesIO(rollout.video())) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 13 and frames[0].shape == (180, 320, 3)
    assert np.median(frames[-1][:5]) < 80  # the prompt banner (30 % brightness) across the top
    jpg = api.request("GET", f"/rollouts/{rollout.id}/frame.jpg")
    assert cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR) is not None


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
        default = served["api"].request("GET", "/info")["default_cond_scale"]
        assert browser.find_element(By.ID, "scaleValue").text == f"{default:g}"  # the slider starts at the server's
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
        rollouts = served["api"].request("GET", "/rollouts")
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
    wait = served["t_expiring"] + TTL_S + 1 - time.time()
    if wait > 0:
        time.sleep(wait)
    with pytest.raises(C.Gone, match="expired"):
        served["expiring"].act(np.zeros((8, 8, 3), np.uint8))


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
    a, b = served["api"], C.Client(served["url"], api_key=OTHER_KEY, timeout=TIMEOUT)
    zeros, frame = np.zeros(512, np.float32), np.zeros((32, 32, 3), np.uint8)
    mine = a.session(goal_embed=zeros, seed=1)
    theirs = C.Session(b, {"session_id": mine.id})  # b holding a's session id
    for attempt in (lambda: b.request("GET", f"/sessions/{mine.id}"), lambda: theirs.act(frame), theirs.reset,
                    lambda: b.request("DELETE", f"/sessions/{mine.id}")):
        with pytest.raises(C.NotFound, match="unknown session"):
            attempt()
    mine.act(frame)
    assert mine.steps == 1  # untouched by b
    rollout = a.rollout("collect wood", steps=3, wait=False)
    assert rollout.id in [x["rollout_id"] for x in a.request("GET", "/rollouts")]
    assert rollout.id not in [x["rollout_id"] for x in b.request("GET", "/rollouts")]
    for path in ("", "/metrics", "/video.mp4", "/frame.jpg"):
        with pytest.raises(C.NotFound):
            b.request("GET", f"/rollouts/{rollout.id}{path}")
    opened = []
    with pytest.raises(C.TooMany, match="max_sessions_per_key"):
        for _ in range(PER_KEY + 1):
            opened.append(b.session(goal_embed=zeros))
    assert len(opened) == PER_KEY
    a.session(goal_embed=zeros).close()  # a is not held up by b
    for s in opened + [mine]:
        s.close()
    rollout.wait(poll_s=0.5, timeout_s=120)


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
            assert "retry-after" not in r.headers  # final: retrying the same step count cannot succeed
        s.steps, t0 = 9, time.time()
        with pytest.raises(C.FinalConflict, match="is at step 4"):
            s.act(frames[0])  # the client does not retry it either
        assert time.time() - t0 < 5
        s.steps = 4
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
