"""Where episodes come from: OpenAI contractor indexes (HTTP or a local mirror) and local folders.

A source string names one of:

    contractor:<version>      an OpenAI index: 6.x 7.x 8.x 9.x 10.x, basalt-find-cave, basalt-waterfall,
                              basalt-pen-animals, basalt-build-house
    contractor:<index.json>   any index file or URL of the same form {"basedir": ..., "relpaths": [...]}
    local:<dir> (or <dir>)    episode folders <dir>/<name>/{video.mp4, actions.jsonl}, or pairs
                              <dir>/<name>.mp4 + <dir>/<name>.jsonl

`resolve_sources` turns them into `EpisodeTask`s; `fetch_episode` makes a task's files local
(downloading with retries of connection errors and 429/5xx, resuming partial downloads with HTTP Range +
If-Range requests, checking a sha-256 the server states).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

INDEX_URL = "https://openaipublic.blob.core.windows.net/minecraft-rl/snapshots/"
CONTRACTOR_INDEXES = {
    "6.x": "all_6xx_Jun_29.json",
    "7.x": "all_7xx_Apr_6.json",
    "8.x": "all_8xx_Jun_29.json",
    "9.x": "all_9xx_Jun_29.json",
    "10.x": "all_10xx_Jun_29.json",
    "basalt-find-cave": "find-cave-Jul-28.json",
    "basalt-waterfall": "waterfall-Jul-28.json",
    "basalt-pen-animals": "pen-animals-Jul-28.json",
    "basalt-build-house": "build-house-Jul-28.json",
}


class SourceError(ValueError):
    """A source string or index cannot be used; the message says what to pass instead."""


@dataclass
class EpisodeTask:
    """One episode to convert: where its video and actions are (paths or http(s) URLs)."""

    episode_id: str
    video: str
    actions: str
    source: str  # the source string it came from
    index: int = -1  # position in the contractor index (-1 for local folders)

    def to_dict(self) -> dict:
        return asdict(self)


def safe_id(name: str) -> str:
    """A file-name-safe episode id (letters, digits, '-', '_'; others become '_')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name).strip("_") or "episode"


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


RETRY_STATUS = (429, 500, 502, 503, 504)
"""HTTP answers worth retrying (with backoff, honouring Retry-After); any other 4xx is final at once."""


class DownloadError(OSError):
    """A download that cannot succeed by retrying (a 4xx answer, a checksum that does not match)."""


def _session(retries: int):
    """A requests session whose connection errors and RETRY_STATUS answers urllib3 retries with exponential
    backoff (0.5 s, 1 s, 2 s, ... at most 30 s); every other answer comes back as it is."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=max(retries - 1, 0), backoff_factor=0.5, backoff_max=30, status_forcelist=RETRY_STATUS,
                  allowed_methods=frozenset({"GET", "HEAD"}), respect_retry_after_header=True, raise_on_status=False)
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(max_retries=retry))
    return session


def _final_status(url: str, r, retries: int) -> None:
    """Raise DownloadError for an answer that is not a success (urllib3 has already retried 429/5xx)."""
    if r.status_code < 400:
        return
    again = r.status_code in RETRY_STATUS
    raise DownloadError(f"GET {url}: HTTP {r.status_code} {r.reason}"
                        + (f" after {retries} tries" if again else " (a client error: not retried)"))


def http_get(url: str, retries: int = 5, timeout: float = 60.0) -> bytes:
    """GET with retries of connection errors and 429/5xx (urllib3, exponential backoff) and of bodies cut
    short; a 4xx is final at once (`DownloadError`)."""
    import requests

    last: Exception | None = None
    with _session(retries) as session:
        for attempt in range(retries):
            try:
                r = session.get(url, timeout=timeout)
            except requests.exceptions.ChunkedEncodingError as e:  # the body was cut: ask again
                last = e
                time.sleep(min(2 ** attempt * 0.5, 30))
                continue
            except requests.RequestException as e:  # urllib3 has retried the connection already
                raise DownloadError(f"GET {url} failed after {retries} tries: {e}") from None
            _final_status(url, r, retries)
            return r.content
    raise OSError(f"GET {url} failed after {retries} tries: {last}")


def _expected_digest(headers) -> tuple[str, str] | None:
    """(algorithm, hex digest) of the whole file from Repr-Digest / Digest (sha-256) headers, if the server
    sends one (RFC 9530, RFC 3230)."""
    import base64
    import binascii

    for name in ("Repr-Digest", "Digest"):
        for part in (headers.get(name) or "").split(","):
            algo, _, value = part.strip().partition("=")
            if algo.lower() == "sha-256" and value:
                try:
                    return "sha256", base64.b64decode(value.strip(":"), validate=True).hex()
                except (binascii.Error, ValueError):
                    return None
    return None


def _validator(headers) -> str | None:
    """A strong validator for If-Range (a strong ETag, else Last-Modified); weak ETags cannot resume."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def download(url: str, dest: Path, retries: int = 5, timeout: float = 60.0, chunk: int = 1 << 20) -> Path:
    """Download `url` to `dest`, resuming a partial `dest.part` only while the remote file is the same version.

    Connection errors and 429/5xx answers are retried by urllib3 with backoff; any other 4xx fails at once
    (`DownloadError`). A transfer cut mid-body is resumed with `Range` + `If-Range: <the ETag or Last-Modified
    of the first answer>` (kept in `dest.part.json`), so a server whose file changed sends the whole new
    version instead of the rest of the old one; without a validator the download restarts. When the server
    states a sha-256 of the file (Repr-Digest / Digest), the finished file is checked against it. A finished
    download is renamed from `.part` to `dest`, so `dest` existing means complete.
    """
    import hashlib

    import requests

    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    meta_path = dest.with_name(dest.name + ".part.json")
    last: Exception | None = None
    with _session(retries) as session:
        for attempt in range(retries):  # beyond urllib3's retries: resume after a connection cut mid-body
            meta = json.loads(meta_path.read_text()) if meta_path.exists() and part.exists() else {}
            have = part.stat().st_size if part.exists() and meta.get("validator") else 0
            headers = {"Range": f"bytes={have}-", "If-Range": meta["validator"]} if have else {}
            try:
                r = session.get(url, headers=headers, stream=True, timeout=timeout)
            except requests.RequestException as e:  # urllib3 has retried the connection already
                raise DownloadError(f"download of {url} failed after {retries} tries: {e}") from None
            try:
                with r:
                    if r.status_code == 416:  # the part is complete, or the file shrank: start over
                        part.unlink(missing_ok=True)
                        meta_path.unlink(missing_ok=True)
                        raise OSError(f"GET {url}: HTTP 416 for bytes {have}-; restarting")
                    _final_status(url, r, retries)
                    resumed = r.status_code == 206 and have and r.headers.get("Content-Range", "").startswith(
                        f"bytes {have}-")
                    if r.status_code == 206 and not resumed:  # a range we did not ask for: start over
                        part.unlink(missing_ok=True)
                        meta_path.unlink(missing_ok=True)
                        raise OSError(f"GET {url}: unexpected Content-Range {r.headers.get('Content-Range')!r}")
                    if not resumed:  # a whole file (new, or the remote changed since the part was written)
                        meta = {"validator": _validator(r.headers), "digest": _expected_digest(r.headers)}
                        meta_path.write_text(json.dumps(meta))
                    expected = r.headers.get("Content-Length")
                    written = 0
                    with open(part, "ab" if resumed else "wb") as f:
                        for block in r.iter_content(chunk):
                            f.write(block)
                            written += len(block)
                    if expected is not None and written < int(expected):
                        raise OSError(f"connection closed after {written} of {expected} bytes")
                digest = meta.get("digest")
                if digest:
                    got = hashlib.new(digest[0], part.read_bytes()).hexdigest()
                    if got != digest[1]:
                        part.unlink(missing_ok=True)
                        meta_path.unlink(missing_ok=True)
                        raise OSError(f"{url}: {digest[0]} {got[:12]}... does not match the server's "
                                      f"{digest[1][:12]}...; downloading again")
                part.rename(dest)
                meta_path.unlink(missing_ok=True)
                return dest
            except DownloadError:
                raise
            except (requests.RequestException, OSError) as e:
                last = e
                time.sleep(min(2 ** attempt * 0.5, 30))
    raise OSError(f"download of {url} failed after {retries} tries (partial file kept at {part} "
                  f"and resumed next time if the remote file is unchanged): {last}")


def read_index(spec: str, mirror: str | None = None, cache_dir: str | None = None, retries: int = 5) -> dict:
    """A contractor index by version name, file path or URL -> {"basedir", "relpaths"}.

    With `mirror`, a version's index is read from <mirror>/<index file name> when that file exists.
    Downloaded indexes are cached in <cache_dir>/indexes/.
    """
    if spec in CONTRACTOR_INDEXES:
        name = CONTRACTOR_INDEXES[spec]
        if mirror and (Path(mirror) / name).exists():
            location = str(Path(mirror) / name)
        else:
            location = INDEX_URL + name
    elif spec.endswith(".json") or _is_url(spec):
        location = spec
    else:
        raise SourceError(f"contractor index {spec!r} is unknown: use one of {sorted(CONTRACTOR_INDEXES)}, "
                          "a path to an index .json or its URL")
    if _is_url(location):
        cached = Path(cache_dir or "/tmp/steve1_contractor_cache") / "indexes" / Path(location).name
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(http_get(location, retries=retries))
        data = cached.read_text()
    else:
        if not Path(location).exists():
            raise SourceError(f"contractor index file {location} does not exist")
        data = Path(location).read_text()
    try:
        index = json.loads(data)
    except json.JSONDecodeError as e:
        raise SourceError(f"contractor index {location} is not JSON ({e.msg})") from None
    if not isinstance(index, dict) or "basedir" not in index or "relpaths" not in index:
        raise SourceError(f"contractor index {location} lacks 'basedir'/'relpaths'; expected "
                          '{"basedir": "<url prefix>/", "relpaths": ["<dir>/<name>.mp4", ...]}')
    return index


def _contractor_tasks(source: str, spec: str, mirror: str | None, cache_dir: str | None,
                      num_episodes: int, offset: int) -> list[EpisodeTask]:
    index = read_index(spec, mirror, cache_dir)
    basedir = index["basedir"].rstrip("/")
    tag = safe_id(spec if spec in CONTRACTOR_INDEXES else Path(spec).stem).replace("_", "")
    relpaths = index["relpaths"]
    end = len(relpaths) if num_episodes < 0 else min(len(relpaths), offset + num_episodes)
    tasks = []
    for i in range(offset, end):
        rel = relpaths[i].strip("/")
        stem = rel[:-4] if rel.endswith(".mp4") else rel
        if mirror:
            video, actions = str(Path(mirror) / f"{stem}.mp4"), str(Path(mirror) / f"{stem}.jsonl")
        else:
            video, actions = f"{basedir}/{stem}.mp4", f"{basedir}/{stem}.jsonl"
        tasks.append(EpisodeTask(f"{tag}-{safe_id(Path(stem).name)}", video, actions, source, i))
    return tasks


def _local_tasks(source: str, folder: str, num_episodes: int, offset: int) -> list[EpisodeTask]:
    root = Path(folder)
    if not root.is_dir():
        raise SourceError(f"source {source!r}: {root} is not a folder of episodes")
    found: list[EpisodeTask] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / "video.mp4").exists() or (d / "actions.jsonl").exists():
            found.append(EpisodeTask(safe_id(d.name), str(d / "video.mp4"), str(d / "actions.jsonl"), source))
    for mp4 in sorted(root.glob("*.mp4")):
        found.append(EpisodeTask(safe_id(mp4.stem), str(mp4), str(mp4.with_suffix(".jsonl")), source))
    if not found:
        raise SourceError(f"source {source!r}: no episodes in {root}; expected <name>/video.mp4 + "
                          "<name>/actions.jsonl or <name>.mp4 + <name>.jsonl")
    end = len(found) if num_episodes < 0 else offset + num_episodes
    return found[offset:end]


def resolve_sources(sources: list[str], num_episodes: int = -1, episode_offset: int = 0,
                    mirror: str | None = None, cache_dir: str | None = None) -> list[EpisodeTask]:
    """Source strings -> episode tasks (per source: `num_episodes` from `episode_offset`; -1 = all)."""
    tasks: list[EpisodeTask] = []
    for source in sources:
        if source.startswith("contractor:"):
            tasks += _contractor_tasks(source, source.split(":", 1)[1], mirror, cache_dir, num_episodes,
                                       episode_offset)
        else:
            folder = source.split(":", 1)[1] if source.startswith("local:") else source
            tasks += _local_tasks(source, folder, num_episodes, episode_offset)
    seen: dict[str, EpisodeTask] = {}
    for t in tasks:
        if t.episode_id in seen:
            raise SourceError(f"episode id {t.episode_id!r} comes from both {seen[t.episode_id].video} and "
                              f"{t.video}; rename one folder or convert the sources into separate roots")
        seen[t.episode_id] = t
    return tasks


def fetch_episode(task: EpisodeTask, cache_dir: str, retries: int = 5, timeout: float = 60.0) -> tuple[Path, Path, bool]:
    """Local (video, actions) paths of a task, downloading URLs into cache_dir; last item: downloaded."""
    if not _is_url(task.video):
        return Path(task.video), Path(task.actions), False
    folder = Path(cache_dir) / task.episode_id
    video = download(task.video, folder / "video.mp4", retries, timeout)
    actions = download(task.actions, folder / "actions.jsonl", retries, timeout)
    return video, actions, True
