"""Sources: contractor indexes (local mirror, HTTP with retries and resumed downloads), local folders."""
from __future__ import annotations

import http.server
import json
import shutil
import threading
from functools import partial

import pytest

from conftest import FIXTURES
from steve1_ray.data.sources import (DownloadError, EpisodeTask, SourceError, download, fetch_episode, read_index,
                                    resolve_sources)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with Range + If-Range support and a strong ETag (the file's sha256), as S3 or nginx serve
    them; the first GET of each file is cut short (a dropped connection). `fail` queues status codes to answer
    per path first; `digest` adds a Repr-Digest header (sha-256 of the file, or `bad`)."""

    cut: set = set()
    ranges: list = []
    requests: list = []
    fail: dict = {}
    digest: str | None = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        import base64
        import hashlib

        RangeHandler.requests.append(self.path)
        if RangeHandler.fail.get(self.path):
            self.send_error(RangeHandler.fail[self.path].pop(0))
            return
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        start = 0
        rng = self.headers.get("Range")
        if rng and self.headers.get("If-Range") not in (None, etag):
            rng = None  # the file changed: the whole new version (RFC 9110 If-Range)
        if rng:
            RangeHandler.ranges.append((self.path, rng))
            start = int(rng.split("=")[1].split("-")[0])
        body = data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if RangeHandler.digest:
            d = hashlib.sha256(data if RangeHandler.digest == "good" else b"other").digest()
            self.send_header("Repr-Digest", f"sha-256=:{base64.b64encode(d).decode()}:")
        self.end_headers()
        if self.path not in RangeHandler.cut and len(body) > 100:
            RangeHandler.cut.add(self.path)
            self.wfile.write(body[: len(body) // 2])  # then close: the client sees a short read
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    (root / "data" / "10.0").mkdir(parents=True)
    for name in ("alpha-1", "beta-2"):
        shutil.copy(FIXTURES / "contractor" / "video.mp4", root / "data" / "10.0" / f"{name}.mp4")
        shutil.copy(FIXTURES / "contractor" / "actions.jsonl", root / "data" / "10.0" / f"{name}.jsonl")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    (root / "index.json").write_text(json.dumps({"basedir": f"{base}/", "relpaths": [
        "data/10.0/alpha-1.mp4", "data/10.0/beta-2.mp4"]}))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    RangeHandler.cut, RangeHandler.ranges, RangeHandler.requests = set(), [], []
    RangeHandler.fail, RangeHandler.digest = {}, None
    yield base, root
    httpd.shutdown()


def test_http_index_and_resumed_download(server, tmp_path):
    base, root = server
    tasks = resolve_sources([f"contractor:{base}/index.json"], num_episodes=1, episode_offset=1,
                            cache_dir=str(tmp_path / "cache"))
    assert [t.episode_id for t in tasks] == ["index-beta-2"] and tasks[0].video.endswith("/data/10.0/beta-2.mp4")
    video, actions, downloaded = fetch_episode(tasks[0], str(tmp_path / "cache"), retries=3)
    assert downloaded and video.read_bytes() == (root / "data/10.0/beta-2.mp4").read_bytes()
    assert actions.read_bytes() == (root / "data/10.0/beta-2.jsonl").read_bytes()
    assert not list(video.parent.glob("*.part"))
    # with small blocks the bytes before the drop are kept and the rest is fetched with a Range request
    dest = download(f"{base}/data/10.0/alpha-1.mp4", tmp_path / "direct" / "a.mp4", retries=3, chunk=256)
    assert dest.read_bytes() == (root / "data/10.0/alpha-1.mp4").read_bytes()
    ranges = [r for p, r in RangeHandler.ranges if p == "/data/10.0/alpha-1.mp4"]
    assert len(ranges) == 1 and int(ranges[0][6:-1]) > 0  # resumed, not restarted


def test_download_gives_up_with_a_clear_error(server, tmp_path):
    """A 4xx is final at once (before: retried 5 times); 429/5xx are retried by urllib3 with backoff."""
    base, root = server
    with pytest.raises(DownloadError, match="404.*not retried"):
        download(f"{base}/missing.mp4", tmp_path / "x.mp4", retries=3)
    assert RangeHandler.requests == ["/missing.mp4"]
    RangeHandler.fail["/data/10.0/alpha-1.jsonl"] = [503, 500]
    got = download(f"{base}/data/10.0/alpha-1.jsonl", tmp_path / "a.jsonl", retries=3)
    assert got.read_bytes() == (root / "data/10.0/alpha-1.jsonl").read_bytes()
    assert RangeHandler.requests.count("/data/10.0/alpha-1.jsonl") >= 3
    RangeHandler.fail["/data/10.0/beta-2.jsonl"] = [503] * 3
    with pytest.raises(DownloadError, match="503.*after 2 tries"):
        download(f"{base}/data/10.0/beta-2.jsonl", tmp_path / "b.jsonl", retries=2)


def test_a_resume_never_splices_two_versions_of_a_file(server, tmp_path):
    """The transfer is cut, then the remote file changes: the resume's If-Range (the first answer's ETag) no
    longer matches, so the server sends the whole new version (before: the old prefix + the new tail)."""
    base, root = server
    remote = root / "data/10.0/alpha-1.mp4"
    dest = tmp_path / "v.mp4"
    real_get = __import__("requests").Session.get
    calls = []

    def get_then_change(self, url, **kw):  # the file is replaced between the cut and the resume
        calls.append(kw.get("headers") or {})
        if len(calls) == 2:
            remote.write_bytes(b"NEW VERSION " * 4000)
        return real_get(self, url, **kw)

    import requests
    requests.Session.get = get_then_change
    try:
        download(f"{base}/data/10.0/alpha-1.mp4", dest, retries=3, chunk=256)
    finally:
        requests.Session.get = real_get
    assert dest.read_bytes() == remote.read_bytes() == b"NEW VERSION " * 4000
    assert "If-Range" in calls[1] and int(calls[1]["Range"][6:-1]) > 0  # it did try to resume


def test_a_stated_checksum_is_checked(server, tmp_path):
    base, root = server
    RangeHandler.digest = "good"
    got = download(f"{base}/data/10.0/beta-2.mp4", tmp_path / "ok.mp4", retries=3, chunk=256)  # cut, resumed
    assert got.read_bytes() == (root / "data/10.0/beta-2.mp4").read_bytes()
    RangeHandler.digest = "bad"
    with pytest.raises(OSError, match="does not match the server's"):
        download(f"{base}/data/10.0/alpha-1.jsonl", tmp_path / "bad.jsonl", retries=2)
    assert not (tmp_path / "bad.jsonl").exists() and not (tmp_path / "bad.jsonl.part").exists()


def test_local_mirror_layout(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "data" / "8.0").mkdir(parents=True)
    (mirror / "all_8xx_Jun_29.json").write_text(json.dumps({"basedir": "https://example.invalid/x/",
                                                            "relpaths": ["data/8.0/a-1.mp4", "data/8.0/b-2.mp4"]}))
    tasks = resolve_sources(["contractor:8.x"], mirror=str(mirror))
    assert [t.episode_id for t in tasks] == ["8x-a-1", "8x-b-2"]
    assert tasks[0].video == str(mirror / "data/8.0/a-1.mp4") and tasks[0].actions.endswith("a-1.jsonl")
    assert fetch_episode(tasks[0], str(tmp_path))[2] is False  # local: nothing downloaded


def test_local_folders_and_errors(tmp_path):
    for name in ("episode_000", "episode_001"):
        (tmp_path / "rec" / name).mkdir(parents=True)
        (tmp_path / "rec" / name / "video.mp4").write_bytes(b"")
    (tmp_path / "rec" / "flat.mp4").write_bytes(b"")
    tasks = resolve_sources([f"local:{tmp_path / 'rec'}"])
    assert [t.episode_id for t in tasks] == ["episode_000", "episode_001", "flat"]
    assert isinstance(tasks[0], EpisodeTask) and tasks[2].actions.endswith("flat.jsonl")
    assert len(resolve_sources([str(tmp_path / "rec")], num_episodes=2)) == 2
    with pytest.raises(SourceError, match="same|both"):
        resolve_sources([str(tmp_path / "rec"), f"local:{tmp_path / 'rec'}"])
    with pytest.raises(SourceError, match="not a folder"):
        resolve_sources([str(tmp_path / "nope")])
    with pytest.raises(SourceError, match="unknown"):
        read_index("11.x")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SourceError, match="basedir"):
        read_index(str(tmp_path / "bad.json"))
