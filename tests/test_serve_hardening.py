"""Hostile input to the service, checked without Ray: image bombs and odd formats, float32 overflow, API keys,
bind safety, per-client sessions and quotas, and the body limit counted while a chunked body streams in.
(The same behaviours through a real `serve.run` app are in tests/test_serve.py.)"""
from __future__ import annotations

import asyncio
import base64
import io
import resource
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from steve1_ray.serving import auth, inputs
from steve1_ray.serving.config import ServeConfig
from steve1_ray.serving.inputs import InputError, check_embedding, decode_image, image_format
from steve1_ray.serving.sessions import SessionTable

KEY_A, KEY_B = "a" * 12 + "-key-one-xyz", "b" * 12 + "-key-two-xyz"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_bomb(width: int, height: int) -> bytes:
    """A valid RGB PNG of width x height black pixels: a few hundred KB that decode to width*height*3 bytes."""
    z = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_decompression_bomb_is_refused_from_its_header_at_almost_no_cost():
    bomb = png_bomb(14000, 14000)  # 196 Mpx: 588 MB once decoded
    assert len(bomb) < 700_000
    data = _b64(bomb)
    before = _rss_mb()
    with pytest.raises(InputError) as e:
        decode_image(data, 1024 * 1024)
    assert e.value.status == 413 and "downscale" in e.value.message
    assert _rss_mb() - before < 50  # peak RSS: the compressed bytes, not the pixels
    # below Pillow's own bomb limit but above ours: refused from the header too, nothing decoded
    with pytest.raises(InputError) as e:
        decode_image(_b64(png_bomb(3000, 3000)), 1024 * 1024)
    assert e.value.status == 413 and "3000x3000" in e.value.message and "max_image_pixels" in e.value.message
    assert _rss_mb() - before < 50


def test_only_png_jpeg_bmp_webp_by_magic_bytes():
    img = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp"):
        ok, enc = cv2.imencode(ext, img)
        assert ok
        out = decode_image(_b64(enc.tobytes()), 10_000)
        assert out.shape == (24, 40, 3), ext
        assert image_format(enc.tobytes()) in ("PNG", "JPEG", "BMP", "WEBP")
    # formats cv2 would happily decode (and size unchecked before): refused before any decoder runs
    hdr = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 20000 +X 20000\n" + b"\x00" * 64
    ok, ppm = cv2.imencode(".ppm", img)
    gif = io.BytesIO()
    Image.fromarray(img).save(gif, format="GIF")
    for name, raw in (("hdr", hdr), ("ppm", ppm.tobytes()), ("gif", gif.getvalue()), ("text", b"hello world")):
        with pytest.raises(InputError) as e:
            decode_image(_b64(raw), 10_000)
        assert e.value.status == 400 and "PNG, JPEG, BMP or WebP" in e.value.message, name
    # a PNG signature with a broken header, and a PNG cut after its header
    ok, png = cv2.imencode(".png", img)
    for name, raw in (("bad header", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), ("truncated", png.tobytes()[:60])):
        with pytest.raises(InputError) as e:
            decode_image(_b64(raw), 10_000)
        assert e.value.status == 400, name


def test_cv2_has_its_own_pixel_cap(tmp_path):
    """The backstop: in a process that imports steve1_ray first (as the served app's replicas do), cv2 refuses
    images above OPENCV_IO_MAX_IMAGE_PIXELS (cv2 reads it once, when it loads; this test process loaded it first)."""
    import subprocess
    import sys

    (tmp_path / "big.png").write_bytes(png_bomb(6000, 6000))  # 36 Mpx > 2**25
    code = ("import steve1_ray, cv2, numpy as np, sys\n"
            "raw = np.fromfile(sys.argv[1], np.uint8)\n"
            "try:\n    cv2.imdecode(raw, cv2.IMREAD_COLOR)\nexcept cv2.error as e:\n    print('refused', e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.png")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "refused" in out.stdout and "CV_IO_MAX_IMAGE_PIXELS" in out.stdout, out


def test_embedding_values_must_fit_float32():
    with pytest.raises(InputError) as e:
        check_embedding([1e300] + [0.0] * 7, 8)
    assert e.value.status == 422 and "float32" in e.value.message
    assert np.isfinite(check_embedding([3e38] + [0.0] * 7, 8)).all()


def test_api_keys_from_env_and_file_never_short(tmp_path, monkeypatch):
    monkeypatch.setenv("STEVE1_API_KEYS", f"{KEY_A}, {KEY_B}")
    f = tmp_path / "keys"
    f.write_text(f"# operators\n{KEY_B}\n\n{'c' * 20}\n")
    assert auth.read_keys("STEVE1_API_KEYS", str(f)) == [KEY_A, KEY_B, "c" * 20]
    monkeypatch.setenv("STEVE1_API_KEYS", "short")
    with pytest.raises(auth.AuthConfigError, match="shorter than 16"):
        auth.read_keys("STEVE1_API_KEYS", None)
    with pytest.raises(auth.AuthConfigError, match="cannot be read"):
        auth.read_keys(None, str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(auth.AuthConfigError, match="has no key"):
        auth.read_keys(None, str(tmp_path / "empty"))
    monkeypatch.delenv("STEVE1_API_KEYS")
    assert auth.read_keys("STEVE1_API_KEYS", None) == []


def test_identify_compares_digests_and_names_clients_by_id():
    digests = [auth.digest(KEY_A), auth.digest(KEY_B)]
    a, b = auth.identify(KEY_A, digests), auth.identify(KEY_B, digests)
    assert a and b and a != b and KEY_A not in a and len(a) == 16
    for wrong in (None, "", KEY_A + "x", KEY_A[:-1], KEY_A.upper()):
        assert auth.identify(wrong, digests) is None


def test_non_loopback_bind_needs_a_key_or_insecure():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        auth.check_bind(host, has_keys=False, insecure=False)
    for host in ("0.0.0.0", "::", "10.0.0.7", "example.org"):
        with pytest.raises(auth.AuthConfigError, match="insecure=true"):
            auth.check_bind(host, has_keys=False, insecure=False)
        auth.check_bind(host, has_keys=True, insecure=False)
        auth.check_bind(host, has_keys=False, insecure=True)


def test_build_app_refuses_an_open_bind_and_never_carries_the_key(monkeypatch):
    from steve1_ray.serving.app import build_app

    monkeypatch.delenv("STEVE1_API_KEYS", raising=False)
    with pytest.raises(auth.AuthConfigError):
        build_app(ServeConfig(host="0.0.0.0"))
    monkeypatch.setenv("STEVE1_API_KEYS", KEY_A)
    graph = build_app(ServeConfig(host="0.0.0.0"))
    args = graph._bound_deployment.init_args  # what travels to the ingress replica
    assert KEY_A not in repr(args) and auth.digest(KEY_A) in args[-1]
    # the old field is named with where the key goes now
    from steve1_ray.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="STEVE1_API_KEYS"):
        from_dict(ServeConfig, {"api_key": KEY_A})


def test_sessions_belong_to_their_client_with_a_quota_each():
    t = SessionTable(max_sessions=10, ttl_s=60, max_per_client=3)
    goal = np.zeros(4, np.float32)
    mine = [t.create(goal, 6.0, i, client="A")["session"]["session_id"] for i in range(3)]
    over = t.create(goal, 6.0, 9, client="A")
    assert over["http_status"] == 429 and "max_sessions_per_key=3" in over["error"]
    theirs = t.create(goal, 6.0, 0, client="B")["session"]["session_id"]
    internal = t.create(goal, 6.0, 0)["session"]["session_id"]  # rollouts' own sessions: no client
    for call in (lambda s, c: t.get(s, client=c), lambda s, c: t.reset(s, 1.0, 1, c), lambda s, c: t.delete(s, c)):
        assert call(mine[0], "B")["http_status"] == 404  # as unknown as a missing one
    assert t.get(mine[0], client="A")["session"]["session_id"] == mine[0]
    assert t.get(mine[0])["client"] == "A"  # internal callers (the policy replicas) see every record
    assert t.get(internal, client="B")["session"]["session_id"] == internal
    assert t.delete(theirs, "B") == {"deleted": theirs}
    assert t.delete(mine[0], "A") == {"deleted": mine[0]}
    assert "session" in t.create(goal, 6.0, 3, client="A")  # room again


def _run_guard(body_chunks, headers, limit=4096, method="POST", inflight=None, then=None, disconnect=False):
    """Drive `Guard` as an ASGI app: returns (status sent, bytes the inner app saw, chunks pulled from receive).
    `then(seen)` runs inside the inner app once it has the body; `disconnect`: the client goes away after the
    chunks, before the body's end."""
    from steve1_ray.serving.app import Guard

    seen, pulled, sent = {}, [0], {}

    async def inner(scope, receive, send):
        msg = await receive()
        seen["body"] = msg["body"]
        seen["client"] = scope["state"]["client"]
        if then is not None:
            then(seen)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        i = pulled[0]
        pulled[0] += 1
        if i >= len(body_chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": body_chunks[i],
                "more_body": disconnect or i < len(body_chunks) - 1}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        else:
            sent["body"] = sent.get("body", b"") + message.get("body", b"")

    cfg = ServeConfig(max_payload_bytes=limit, max_inflight_bytes=inflight or 512 * 1024 * 1024)
    inputs.RUNTIME.update(cfg=cfg, key_digests=[auth.digest(KEY_A)])
    scope = {"type": "http", "method": method, "path": "/sessions",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    try:
        asyncio.run(Guard(inner)(scope, receive, send))
    finally:
        inputs.RUNTIME.clear()
    return sent, seen, pulled[0]


def test_body_limit_is_counted_while_a_chunked_body_streams_in():
    chunks = [b"x" * 1024] * 1000  # 1 MB, no Content-Length
    sent, seen, pulled = _run_guard(chunks, {"x-api-key": KEY_A, "transfer-encoding": "chunked"})
    assert sent["status"] == 413 and b"max_payload_bytes" in sent["body"]
    assert pulled == 5 and not seen  # stopped at the first chunk past 4096 bytes; the app never ran
    # a declared Content-Length over the limit is refused before a byte is read
    sent, seen, pulled = _run_guard(chunks, {"x-api-key": KEY_A, "content-length": str(1024 * 1000)})
    assert sent["status"] == 413 and pulled == 0
    sent, _, _ = _run_guard(chunks, {"x-api-key": KEY_A, "content-length": "12abc"})
    assert sent["status"] == 400
    # within the limit: the app sees the whole body once, and who the client is
    sent, seen, _ = _run_guard([b"ab", b"cd", b"ef"], {"x-api-key": KEY_A})
    assert sent["status"] == 200 and seen["body"] == b"abcdef" and seen["client"] == auth.identify(KEY_A, [
        auth.digest(KEY_A)])
    sent, seen, pulled = _run_guard([b"{}"], {"x-api-key": "wrong-key-0123456789"})
    assert sent["status"] == 401 and not seen and pulled == 0


def test_bodies_held_at_once_are_bounded_and_given_back():
    """The Api admits every session's step at once (ServeConfig.ongoing_limits), so what all the bodies it holds
    may cost is bounded by max_inflight_bytes, and one API key's by a quarter of it: a body that would go past
    either gets 503 + Retry-After (a declared Content-Length before a byte is read), and a body's bytes are held
    while its request runs and are free again once it is answered, refused, cut off or failed."""
    budget, other = inputs.BODIES, "some-other-key"
    key = {"x-api-key": KEY_A}
    me = auth.identify(KEY_A, [auth.digest(KEY_A)])
    assert budget.take(36_000, 10**9, other)  # another client's requests hold 36,000 bytes right now
    try:
        sent, seen, pulled = _run_guard([b"x" * 3000, b"y" * 3000], key, limit=8192, inflight=40_000)
        assert sent["status"] == 503 and b"max_inflight_bytes" in sent["body"] and not seen and pulled == 2
        assert budget.held == 36_000 and me not in budget.by_client  # the refused body's first chunk is given back
        # declared: refused before a byte is read
        sent, seen, pulled = _run_guard([b"x" * 5000], {**key, "content-length": "5000"}, limit=8192,
                                        inflight=40_000)
        assert sent["status"] == 503 and pulled == 0 and budget.held == 36_000

        def holds(seen):
            seen["held"] = (budget.held, budget.by_client.get(me))

        sent, seen, _ = _run_guard([b"x" * 3000], key, limit=8192, inflight=40_000, then=holds)
        assert sent["status"] == 200 and seen["held"] == (39_000, 3000) and budget.held == 36_000
        sent, seen, _ = _run_guard([b"x" * 3000], {**key, "content-length": "3000"}, limit=8192, inflight=40_000,
                                   then=holds)
        assert sent["status"] == 200 and seen["held"] == (39_000, 3000) and budget.held == 36_000
        sent, _, _ = _run_guard([b"x" * 3000, b"y" * 3000, b"z" * 5000], key, limit=8192)
        assert sent["status"] == 413 and budget.held == 36_000
        sent, seen, pulled = _run_guard([b"x" * 100], key, disconnect=True)  # the client goes away mid-body
        assert not sent and not seen and pulled == 2 and budget.held == 36_000

        def fail(seen):
            raise RuntimeError("the app failed")

        with pytest.raises(RuntimeError):
            _run_guard([b"x" * 100], key, then=fail)
        assert budget.held == 36_000 and me not in budget.by_client
        # one key's share: a quarter of the budget, whatever the others leave free
        sent, _, pulled = _run_guard([b"x" * 9000] * 3, key, limit=32768, inflight=100_000)
        assert sent["status"] == 503 and pulled == 3 and budget.held == 36_000
    finally:
        budget.give(36_000, other)
    assert budget.held == 0 and not budget.by_client
    with pytest.raises(Exception, match="max_inflight_bytes"):
        ServeConfig(max_payload_bytes=4096, max_inflight_bytes=1024)


def test_moving_a_session_between_replicas_is_exact_or_409():
    """The store's claim: a replica steps a session only with its latest state. A copy another replica has
    stepped past is reloaded (exact, with state_sync_every=1); newer state the store has not seen is a 409
    while its replica is in contact, and after its lease the session continues from its last sync."""
    now = [100.0]
    t = SessionTable(max_sessions=10, ttl_s=600, clock=lambda: now[0])
    sid = t.create(np.zeros(4, np.float32), 6.0, 0)["session"]["session_id"]
    assert t.claim("A", [(sid, None, None)]) == {sid: "load"}  # nobody holds it: load (fresh)
    t.sync("A", [{"session_id": sid, "epoch": 0, "steps": 1, "state": ["s1"], "rng_state": "r1",
                  "last_result": {"step": 1}}])
    assert t.claim("A", [(sid, 0, 1)]) == {sid: "ok"}  # A's copy is the latest
    busy = t.claim("B", [(sid, None, None)])[sid]  # A is stepping it right now (claimed, not synced)
    assert busy["http_status"] == 409 and "right now" in busy["error"]
    t.sync("A", [], released=(sid,))  # A's batch ended without stepping it
    assert t.claim("B", [(sid, None, None)]) == {sid: "load"}  # B takes over from the store: exact
    t.sync("B", [{"session_id": sid, "epoch": 0, "steps": 2, "state": ["s2"], "rng_state": "r2"}])
    assert t.claim("A", [(sid, 0, 1)]) == {sid: "load"}  # A's hot copy is stale (step 1 < 2): reload
    assert t.get(sid, with_state=True)["state"] == ["s2"]
    # a step A took but synced without its state (state_sync_every > 1): B must not step an old state
    assert t.sync("A", [{"session_id": sid, "epoch": 0, "steps": 3}]) == []
    answer = t.claim("B", [(sid, 0, 2)])[sid]
    assert answer["http_status"] == 409 and "retry" in answer["error"]
    now[0] += 11  # A is silent past its lease (it died): B continues from the last synced state, step 2
    assert t.claim("B", [(sid, 0, 2)]) == {sid: "load"} and t.get(sid)["session"]["steps"] == 2
    # a replica that died mid-step holds its claim only until the lease ends
    now[0] += 11
    assert t.claim("C", [(sid, None, None)])[sid] == "load"
    # a store that restarted: a session id of the old one is a 410 "server restarted", not a 404
    fresh = SessionTable()
    gone = fresh.claim("A", [(sid, 0, 2)])[sid]
    assert gone["http_status"] == 410 and "restarted" in gone["error"]
    assert fresh.get("nonsense")["http_status"] == 404


_PORT_RACE = r'''
import os, socket, sys, urllib.error, urllib.request
os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
import ray
from steve1_ray.serving import run

busy = socket.socket()
busy.bind(("127.0.0.1", 0))
busy.listen()
taken = busy.getsockname()[1]
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
picks = iter([taken])  # the race: the first port picked free is taken before Serve binds it
real = run.free_port
run.free_port = lambda host="127.0.0.1": next(picks, None) or real(host)
port = run.start_http("127.0.0.1")
assert port != taken, port
try:  # Serve's proxy answers (503 until an app runs); the taken port's listener would never answer
    urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthz", timeout=30)
except urllib.error.HTTPError as e:
    print("answered", e.code, e.headers.get("server"))
from ray import serve
serve.shutdown()
rc = run.main([f"port={taken}", "blocking=false", "policy=debug", "rollout_workers=0"])
print("rc", rc)
'''


def test_a_port_taken_before_serve_binds_it_is_picked_again_and_a_given_busy_port_is_a_plain_error():
    """CI failed once with "Failed to bind to address" (a port picked free, taken by the other test process before
    Serve's proxy bound it). `start_http` picks again; `steve1 serve port=<busy>` exits 2 with one plain line."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _PORT_RACE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "answered 503 uvicorn" in out.stdout
    assert "rc 2" in out.stdout
    assert "is in use by another process" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr + out.stdout
