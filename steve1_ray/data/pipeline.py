"""The dataset job on Ray Data: episodes -> (decode + convert) -> (embed + write) -> Parquet shards.

    tasks  = resolve_sources(cfg.sources)                       # driver: which episodes, minus finished ones
    ray.data.from_items(tasks)                                  # one block per episode
      .flat_map(convert_episode)        CPU tasks              # download, decode, actions, resize, JPEG;
                                                               # one row per segment (or one error row)
      .map_batches(EmbedAndWrite, compute=ActorPoolStrategy)   # GPU (or CPU) actors: MineCLIP with cached
                                                               # per-frame features, then the shard file
      .iter_rows()                                             # driver: index/<id>.json once all segments
                                                               # of an episode are in; quarantine on error

An episode counts as finished only when its index entry exists, which the driver writes after all its
segment files are in place; a rerun skips finished (and, unless `retry_quarantined`, quarantined)
episodes. A bad episode becomes one error row and a quarantine/<id>.json file; it never stops the run.

Run: `python jobs/generate_dataset.py --config configs/data/debug.yaml output=/data/ds sources=[local:/rec]`
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import yaml

from steve1_ray.cluster import connect
from steve1_ray.config import absolute_local, check, to_dict
from steve1_ray.data import shards
from steve1_ray.data.contractor import (EpisodeError, frame_of_line, iter_kept_frames, pack_env_buttons,
                                        read_actions)
from steve1_ray.data.embed import WINDOW
from steve1_ray.data.sources import EpisodeTask, SourceError, fetch_episode, resolve_sources
from steve1_ray.models.loading import RANDOM_EMBEDDERS, RELEASED
from steve1_ray.progress import Meter, rate
from steve1_ray.runner import Job, run_job

FPS = 20  # contractor recordings and the embedded world run at 20 Hz


@dataclass
class DataConfig:
    """Config of jobs/generate_dataset.py (YAML overlays + key=value overrides)."""

    output: str = ""
    """Dataset root: a local path or a s3:// / gs:// / file:// URI."""
    sources: list[str] = field(default_factory=list)
    """`contractor:<version|index.json|url>`, `local:<dir>` or `<dir>` (see steve1_ray.data.sources)."""
    num_episodes: int = -1
    """Episodes taken from each source (-1: all), starting at `episode_offset`."""
    episode_offset: int = 0
    """Episodes skipped at the start of each source (in its index order), e.g. to split a source over jobs."""
    mirror: Optional[str] = None
    """Local copy of the contractor files with the index's relpaths under it (no download then)."""
    cache_dir: str = "/tmp/steve1_contractor_cache"
    """Where downloads go (resumed if interrupted); deleted after conversion unless `keep_downloads`."""
    keep_downloads: bool = False
    """Keep the downloaded video and actions files in `cache_dir` after conversion."""
    download_retries: int = 5
    """Tries per downloaded file, with exponential backoff; each try resumes the partial file."""
    download_timeout_s: float = 60.0
    """Seconds a download request may wait to connect or for the next bytes (requests' timeout)."""
    vpt_compat: bool = False
    """Truncate camera degrees toward zero like VPT/STEVE-1 (openai/Video-Pre-Training#54). Off: exact."""
    cursor_image: Optional[str] = None
    """PNG with alpha for the GUI cursor; null draws our own arrow (VPT's png gives bit parity)."""
    expected_resolution: Optional[list[int]] = field(default_factory=lambda: [640, 360])
    """(W, H) every video frame must have; null accepts any size."""
    max_frame_mismatch: int = 0
    """Allowed |video frames - jsonl lines|; larger differences quarantine the episode."""
    min_frames: int = 1000
    """Episodes with fewer kept (non-null) frames are quarantined as too short (original: 1000)."""
    segment_len: int = 500
    """Frames per shard row/file (the last segment of an episode may be shorter)."""
    frame_codec: str = "jpeg"
    """jpeg | png | raw; see docs/data.md for the measured bytes/frame and decode speed."""
    jpeg_quality: int = 95
    """JPEG quality (1-100) of the stored 128x128 frames when frame_codec=jpeg."""
    embedder: str = "mineclip"
    """mineclip | none (no embeddings: zeros, embed_valid False)."""
    mineclip_path: Optional[str] = None
    """MineCLIP checkpoint: the released attn.pth or a world-trained one; null means random (seeded)
    weights, for tests only."""
    mineclip_preset: Optional[str] = None
    """Architecture preset (attn | debug); null: the one stored in the checkpoint, else attn."""
    embed_dim_none: int = 512
    """Width of the zero embeddings when embedder=none."""
    embed_dtype: str = "fp16"
    """fp16 | bf16 | fp32 autocast on GPUs (CPU actors always compute in fp32)."""
    frame_batch: int = 64
    """Frames per ViT forward pass."""
    num_embed_actors: int = 0
    """Maximum size of the embedding actor pool (one GPU each when the cluster has GPUs); 0: one per GPU
    of the cluster, or 1 without GPUs."""
    convert_cpus: float = 1.0
    """CPUs reserved per decode/convert task."""
    decode_threads: int = 1
    """PyAV decoder threads per episode video (1 = single-threaded)."""
    retry_quarantined: bool = False
    """Also redo episodes quarantined by an earlier run."""
    max_convert_attempts: int = 2
    """An episode whose convert task dies this many times (segfault, out of memory: the process is gone, so
    no error row) is quarantined on the next attempt instead of being retried forever (Ray retries tasks of
    dead processes without limit)."""
    crash_episodes: list[str] = field(default_factory=list)
    """Testing aid: episode ids whose convert task kills its own process (os._exit), as a segfault would."""
    overwrite: bool = False
    """Redo finished episodes too."""
    progress: bool = True
    """Print progress lines with an ETA (episodes finished, every tenth and at least every minute), and show
    Ray Data's progress bars on a terminal."""

    def __post_init__(self):
        check(self.frame_codec in shards.FRAME_CODECS,
              f"frame_codec={self.frame_codec!r}: use one of {list(shards.FRAME_CODECS)}")
        check(self.embedder in ("mineclip", "none"), f"embedder={self.embedder!r}: use mineclip or none")
        check(self.embed_dtype in ("fp16", "bf16", "fp32"), f"embed_dtype={self.embed_dtype!r}: fp16|bf16|fp32")
        check(self.segment_len >= WINDOW, f"segment_len={self.segment_len} must be >= {WINDOW}")
        check(self.min_frames >= 1, f"min_frames={self.min_frames} must be >= 1")
        check(1 <= self.jpeg_quality <= 100, f"jpeg_quality={self.jpeg_quality} must be in 1..100")
        check(self.num_embed_actors >= 0, f"num_embed_actors={self.num_embed_actors} must be >= 0 (0: auto)")
        check(self.max_convert_attempts >= 1, f"max_convert_attempts={self.max_convert_attempts} must be >= 1")
        check(self.max_frame_mismatch >= 0, f"max_frame_mismatch={self.max_frame_mismatch} must be >= 0")
        check(self.expected_resolution is None or len(self.expected_resolution) == 2,
              f"expected_resolution={self.expected_resolution!r}: give [W, H] or null")


# --------------------------------------------------------------------------------------------------
# Stage 1: one episode -> segment rows (runs in Ray tasks; plain Python, testable without Ray)


def _error_row(task: dict, reason: str) -> dict:
    return {"episode_id": task["episode_id"], "error": reason, "task": json.dumps(task), "segment": -1,
            "last": True, "start": 0, "n_frames": 0, "context": 0, "frames": [], "buttons": b"",
            "camera": b"", "env_buttons": b"", "env_camera": b"", "mineclip": b"", "episode": ""}


def event_frames(actions, n_frames: int) -> list[int]:
    """Kept-frame indices whose action achieved something (`stat_events`); an event on a dropped (null)
    line moves to the next kept frame. Sorted, unique, < n_frames."""
    if actions.events is None or not actions.events.any():
        return []
    frames = np.unique(frame_of_line(actions.keep)[np.flatnonzero(actions.events)])
    return [int(f) for f in frames if f < n_frames]


def event_links(actions, n_frames: int) -> list[int]:
    """For each of `event_frames`' events, the index (into that list) of the first later event that used an item
    this one gained (a log that went into a table, a sapling planted), or -1. Read from the lines' inventories
    (`inventory_changes`); recordings without them link nothing. `goal_event_pick=use` follows these links."""
    frames = event_frames(actions, n_frames)
    if not frames or actions.items is None:
        return [-1] * len(frames)
    index = {f: k for k, f in enumerate(frames)}
    gained: list[set] = [set() for _ in frames]
    used: list[set] = [set() for _ in frames]
    line_frame = frame_of_line(actions.keep)
    for line in np.flatnonzero(actions.events):
        k = index.get(int(line_frame[line]))
        if k is not None:
            gained[k] |= actions.items[line][0]
            used[k] |= actions.items[line][1]
    links = []
    for k, items in enumerate(gained):
        links.append(next((j for j in range(k + 1, len(frames)) if used[j] & items), -1) if items else -1)
    return links


ATTEMPTS = "attempts"
"""folder of the dataset root with one marker per episode whose convert task started and has not ended"""


def _start_attempt(store: shards.Store, task: dict, cfg: DataConfig) -> str | None:
    """Record that this episode's conversion starts; the reason to quarantine it instead if its earlier
    attempts in this run all died with their process (their markers were never cleared)."""
    eid = task["episode_id"]
    rel = f"{ATTEMPTS}/{eid}.json"
    try:
        died = int(json.loads(store.read_bytes(rel)).get("started", 0)) if store.exists(rel) else 0
    except (ValueError, OSError):
        died = 0
    if died >= cfg.max_convert_attempts:
        store.delete(rel)
        return (f"its convert task died {died} times without an error (the process was killed: a segfault in "
                f"a decoder, or out of memory?); quarantined so the rest of the dataset is ingested")
    store.write_json(rel, {"episode_id": eid, "started": died + 1, "time": time.time()})
    if eid in cfg.crash_episodes:
        os._exit(139)  # testing aid: die like a segfault, leaving the marker behind
    return None


def convert_episode(task: dict, cfg: DataConfig) -> Iterator[dict]:
    """Yield one row per segment of the episode, or a single error row (never raises).

    A segment row carries the encoded 128x128 frames and actions of frames [start, start+n), plus the
    MineCLIP frames of [start-context, start+n) (context = the up to 15 frames before it, so that its
    windows can be embedded without the previous segment). A marker under `attempts/` lives while it runs:
    when the process dies (no error row), Ray retries the task and the marker counts the deaths
    (`max_convert_attempts`, then one error row: quarantined).
    """
    store = shards.Store(cfg.output) if cfg.output else None
    if store is not None:
        crashed = _start_attempt(store, task, cfg)
        if crashed:
            yield _error_row(task, crashed)
            return
    try:
        yield from _convert(task, cfg)
    finally:  # ended (rows or an error row) or closed by the consumer: not a death
        if store is not None:
            store.delete(f"{ATTEMPTS}/{task['episode_id']}.json")


def _convert(task: dict, cfg: DataConfig) -> Iterator[dict]:
    from steve1_ray.actions import env_to_policy

    t0 = time.perf_counter()
    downloaded = None
    try:
        video, actions_path, was_downloaded = fetch_episode(EpisodeTask(**task), cfg.cache_dir,
                                                            cfg.download_retries, cfg.download_timeout_s)
        if was_downloaded:
            downloaded = video.parent
        actions = read_actions(actions_path, vpt_compat=cfg.vpt_compat)
        n_kept = int(actions.keep.sum())
        if n_kept < cfg.min_frames:
            raise EpisodeError(f"too short: {n_kept} non-null frames (of {len(actions.keep)} lines) < "
                               f"min_frames={cfg.min_frames}")
        buttons, camera = env_to_policy(actions.env_actions)
        env_bits = pack_env_buttons(actions.env_actions)
        env_cam = actions.env_actions["camera"].astype(np.float32)
        with_mc = cfg.embedder != "none"
        res = tuple(cfg.expected_resolution) if cfg.expected_resolution is not None else None

        seg_frames: list[np.ndarray] = []
        seg_lines: list[int] = []
        mc: list[np.ndarray] = []  # MineCLIP frames of this segment, after `context` carried frames
        context: list[np.ndarray] = []
        start = segment = 0
        pending: dict | None = None  # rows are yielded one segment late, so the last one can say so

        def make_row() -> dict:
            idx = np.asarray(seg_lines, np.int64)
            mc_all = np.stack(context + mc) if with_mc else np.zeros((0,), np.uint8)
            return {"episode_id": task["episode_id"], "error": "", "task": json.dumps(task), "segment": segment,
                    "last": False, "start": start, "n_frames": len(idx), "context": len(context),
                    "frames": shards.encode_frames(np.stack(seg_frames), cfg.frame_codec, cfg.jpeg_quality),
                    "buttons": buttons[idx].astype(np.int16).tobytes(),
                    "camera": camera[idx].astype(np.int16).tobytes(),
                    "env_buttons": env_bits[idx].tobytes(), "env_camera": env_cam[idx].tobytes(),
                    "mineclip": mc_all.tobytes(), "episode": ""}

        for line, frame, frame_mc in iter_kept_frames(
                video, actions, cfg.cursor_image, with_mineclip=with_mc, expected_resolution=res,
                max_frame_mismatch=cfg.max_frame_mismatch, decode_threads=cfg.decode_threads):
            seg_frames.append(frame)
            seg_lines.append(line)
            if with_mc:
                mc.append(frame_mc)
            if len(seg_frames) == cfg.segment_len:
                if pending is not None:
                    yield pending
                pending = make_row()
                context = (context + mc)[-(WINDOW - 1):] if with_mc else []
                start += len(seg_frames)
                segment += 1
                seg_frames, seg_lines, mc = [], [], []
        if seg_frames:
            if pending is not None:
                yield pending
            pending = make_row()
        n_frames = start + len(seg_frames)
        if pending is None:
            raise EpisodeError("no frames left after dropping null actions")
        if n_frames < cfg.min_frames:
            raise EpisodeError(f"too short: {n_frames} frames after decoding < min_frames={cfg.min_frames}")
        pending["last"] = True
        pending["episode"] = json.dumps({
            "n_frames": n_frames, "n_lines": len(actions.keep), "seconds": len(actions.keep) / FPS,
            "convert_s": round(time.perf_counter() - t0, 3), "events": event_frames(actions, n_frames),
            "event_links": event_links(actions, n_frames)})
        yield pending
    except EpisodeError as e:
        yield _error_row(task, str(e))
    except Exception as e:  # noqa: BLE001 - any failure of one episode is that episode's problem
        tb = traceback.format_exception_only(type(e), e)[-1].strip()
        yield _error_row(task, f"unexpected error while converting: {tb}")
    finally:
        if downloaded is not None and not cfg.keep_downloads:
            import shutil

            shutil.rmtree(downloaded, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Stage 2: embed + write (Ray actors; plain class, testable without Ray)


class EmbedAndWrite:
    """Computes a segment's MineCLIP embeddings (cached per-frame features) and writes its shard file."""

    def __init__(self, cfg: DataConfig, embedder_factory=None):
        self.cfg = cfg
        self.store = shards.Store(cfg.output)
        self.model = None
        if cfg.embedder == "mineclip":
            if embedder_factory is None:
                from steve1_ray.models.loading import load_embedder

                self.model = load_embedder(cfg.mineclip_path, cfg.mineclip_preset, device="auto")
            else:
                self.model = embedder_factory()
        self.dim = int(self.model.embed_dim) if self.model is not None else cfg.embed_dim_none

    def embed(self, mineclip: bytes, n: int, context: int) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of the segment's n frames given its context+n MineCLIP frames."""
        from steve1_ray.data.embed import window_embeds

        if self.model is None:
            return np.zeros((n, self.dim), np.float32), np.zeros(n, bool)
        frames = np.frombuffer(mineclip, np.uint8).reshape(context + n, 160, 256, 3)
        embeds, valid = window_embeds(self.model, frames, frame_batch=self.cfg.frame_batch,
                                      dtype=self.cfg.embed_dtype)
        return embeds[context:], valid[context:]

    def process_row(self, row: dict) -> dict:
        out = {"episode_id": row["episode_id"], "segment": int(row["segment"]), "last": bool(row["last"]),
               "error": row["error"], "task": row["task"], "episode": row["episode"], "entry": "",
               "embed_s": 0.0}
        if row["error"]:
            return out
        try:
            t0 = time.perf_counter()
            n, context = int(row["n_frames"]), int(row["context"])
            embeds, valid = self.embed(row["mineclip"], n, context)
            out["embed_s"] = time.perf_counter() - t0
            table = shards.segment_table(
                row["episode_id"], int(row["segment"]), int(row["start"]), list(row["frames"]),
                np.frombuffer(row["buttons"], np.int16), np.frombuffer(row["camera"], np.int16),
                np.frombuffer(row["env_buttons"], np.int32),
                np.frombuffer(row["env_camera"], np.float32).reshape(n, 2),
                embeds, valid, self.cfg.frame_codec)
            out["entry"] = json.dumps(shards.write_segment(self.store, table))
        except Exception as e:  # noqa: BLE001
            out["error"] = "embedding/writing failed: " + traceback.format_exception_only(type(e), e)[-1].strip()
        return out

    def __call__(self, batch):
        """batch: a pyarrow.Table of segment rows (pyarrow keeps binary columns exact)."""
        import pyarrow as pa

        outs = [self.process_row(r) for r in batch.to_pylist()]
        return pa.Table.from_pylist(outs, schema=_RESULT_SCHEMA)


def _result_schema():
    import pyarrow as pa

    return pa.schema([("episode_id", pa.string()), ("segment", pa.int64()), ("last", pa.bool_()),
                      ("error", pa.string()), ("task", pa.string()), ("episode", pa.string()),
                      ("entry", pa.string()), ("embed_s", pa.float64())])


_RESULT_SCHEMA = _result_schema()


# --------------------------------------------------------------------------------------------------
# Driver: bookkeeping of finished / quarantined episodes, manifest, summary


class Ledger:
    """Collects segment results on the driver; finishes or quarantines episodes as they complete."""

    def __init__(self, store: shards.Store, cfg: DataConfig):
        self.store, self.cfg = store, cfg
        self.parts: dict[str, dict] = {}  # episode_id -> {"segments": {k: entry}, "n": total or None, ...}
        self.finished: list[str] = []
        self.quarantined: list[str] = []
        self.frames = 0
        self.seconds = 0.0
        self.embed_s = 0.0

    def add(self, row: dict) -> None:
        eid = row["episode_id"]
        if eid in self.quarantined:
            if row.get("entry"):  # a late segment of an episode that already failed
                self.store.delete(json.loads(row["entry"])["file"])
            return
        st = self.parts.setdefault(eid, {"segments": {}, "n": None, "episode": None})
        st["task"] = json.loads(row["task"])
        if row["error"]:
            self.quarantine(eid, json.loads(row["task"]), row["error"])
            return
        self.embed_s += float(row["embed_s"])
        entry = json.loads(row["entry"])
        st["segments"][entry["segment"]] = entry
        if row["last"]:
            st["n"] = entry["segment"] + 1
            st["episode"] = json.loads(row["episode"])
        if st["n"] is not None and len(st["segments"]) == st["n"]:
            self.finish(eid)

    def quarantine(self, eid: str, task: dict, reason: str) -> None:
        for entry in self.parts.get(eid, {}).get("segments", {}).values():
            self.store.delete(entry["file"])
        self.parts.pop(eid, None)
        self.quarantined.append(eid)
        self.store.delete(f"index/{eid}.json")
        self.store.write_json(f"quarantine/{eid}.json", {"episode_id": eid, "reason": reason, "task": task})
        print(f"[generate_dataset] quarantined {eid}: {reason}", file=sys.stderr, flush=True)

    def finish(self, eid: str) -> None:
        st = self.parts.pop(eid)
        segs = [st["segments"][k] for k in range(st["n"])]
        entry = {"episode_id": eid, "n_frames": st["episode"]["n_frames"], "n_segments": len(segs),
                 "n_lines": st["episode"]["n_lines"], "seconds": st["episode"]["seconds"],
                 "source": st["task"]["source"], "video": st["task"]["video"], "index": st["task"]["index"],
                 "events": st["episode"].get("events", []), "event_links": st["episode"].get("event_links"),
                 "segments": segs}
        self.store.delete(f"quarantine/{eid}.json")
        self.store.write_json(f"index/{eid}.json", entry)
        self.finished.append(eid)
        self.frames += entry["n_frames"]
        self.seconds += entry["seconds"]


def write_manifest(store: shards.Store, cfg: DataConfig, embed_dim: int) -> dict:
    """manifest.json from index/ and quarantine/ (all runs so far)."""
    episodes = shards.list_episodes(store)
    quarantined = [store.read_json(f"quarantine/{n}") for n in store.list("quarantine", ".json")]
    quarantined = [q for q in quarantined if q["episode_id"] not in episodes]
    frames = sum(e["n_frames"] for e in episodes.values())
    seconds = sum(e["seconds"] for e in episodes.values())
    manifest = {
        "format": "steve1_ray.shards", "version": shards.SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "counts": {"episodes": len(episodes), "quarantined": len(quarantined), "frames": frames,
                   "segments": sum(e["n_segments"] for e in episodes.values()),
                   "bytes": sum(s["bytes"] for e in episodes.values() for s in e["segments"]),
                   "hours": round(seconds / 3600, 4)},
        "sources": sorted({e["source"] for e in episodes.values()}),
        "options": to_dict(cfg),
        "schema": {"frame_codec": cfg.frame_codec, "frame_shape": list(shards.FRAME_SHAPE),
                   "embed_dim": embed_dim, "embedder": cfg.embedder, "segment_len": cfg.segment_len,
                   "embed_window": WINDOW, "fps": FPS},
        "episodes": [{k: e[k] for k in ("episode_id", "n_frames", "n_segments", "seconds", "source")}
                     | {"checksums": {s["file"]: s["sha256"] for s in e["segments"]}}
                     for _, e in sorted(episodes.items())],
        "quarantined": [{"episode_id": q["episode_id"], "reason": q["reason"], "source": q["task"]["source"]}
                        for q in quarantined],
    }
    store.write_json("manifest.json", manifest)
    return manifest


def absolute_paths(cfg: DataConfig) -> DataConfig:
    """`cfg` with its local paths absolute: the convert tasks and the embedding actors may run in another folder
    than this driver (a cluster started elsewhere, `ray job submit`), where a relative path is not found. An
    embedder path that is not there fails here, not in an actor."""
    local = absolute_local

    def source(s: str) -> str:
        if s.startswith("contractor:"):
            return s
        return "local:" + local(s[len("local:"):]) if s.startswith("local:") else local(s)

    mineclip = cfg.mineclip_path
    if mineclip and "://" not in mineclip and mineclip not in (RELEASED, *RANDOM_EMBEDDERS):
        check(Path(mineclip).expanduser().is_file(), f"mineclip_path={mineclip!r}: no such file; give MineCLIP's "
              f"attn.pth, one of our embedder checkpoints, {RELEASED!r} or {' or '.join(RANDOM_EMBEDDERS)}")
        mineclip = local(mineclip)
    return replace(cfg, output=local(cfg.output), sources=[source(s) for s in cfg.sources], mirror=local(cfg.mirror),
                   cache_dir=local(cfg.cache_dir), cursor_image=local(cfg.cursor_image), mineclip_path=mineclip)


def generate_dataset(cfg: DataConfig, embedder_factory=None) -> dict:
    """Run the pipeline; returns the summary dict (also printed). Connects to / starts Ray."""
    import ray
    import ray.data as rd

    check(bool(cfg.output), "output is empty: pass output=<dataset root> (a path or s3://, gs:// URI)")
    check(bool(cfg.sources), "sources is empty: pass e.g. sources=[local:/path/to/episodes] or "
                             "sources=[contractor:10.x] (see docs/data.md)")
    cfg = absolute_paths(cfg)
    store = shards.Store(cfg.output)
    store.delete("summary.json")  # a finished run's marker; this run writes its own when it finishes
    store.write_bytes("config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False).encode())
    tasks = resolve_sources(cfg.sources, cfg.num_episodes, cfg.episode_offset, cfg.mirror, cfg.cache_dir)
    done = set() if cfg.overwrite else set(shards.list_episodes(store))
    skip_q = set() if cfg.retry_quarantined or cfg.overwrite else {
        n[:-5] for n in store.list("quarantine", ".json")}
    todo = [t.to_dict() for t in tasks if t.episode_id not in done and t.episode_id not in skip_q]
    for t in todo:  # attempts count within a run: an interrupted earlier run's markers are no deaths
        store.delete(f"{ATTEMPTS}/{t['episode_id']}.json")
    print(f"[generate_dataset] {len(tasks)} episodes in sources, {len(done & {t.episode_id for t in tasks})} "
          f"already finished, {len(skip_q & {t.episode_id for t in tasks})} quarantined before, "
          f"{len(todo)} to convert -> {cfg.output}", flush=True)

    if cfg.embedder == "mineclip" and cfg.mineclip_path is None:
        print(f"[generate_dataset] WARNING: mineclip_path is null, so the embeddings come from a RANDOM "
              f"{cfg.mineclip_preset or 'attn'} MineCLIP (fine for tests; pass mineclip_path=attn.pth for data)",
              file=sys.stderr, flush=True)
    connect(log_to_driver=False)
    ctx = rd.DataContext.get_current()
    # Ray Data's bars on a terminal; elsewhere it would log 9 lines every 10 s without an ETA: ours suffice
    ctx.enable_progress_bars = cfg.progress and sys.stdout.isatty()
    ledger = Ledger(store, cfg)
    t0 = time.perf_counter()
    embed_dim = cfg.embed_dim_none
    if todo:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        n_actors = cfg.num_embed_actors or max(1, gpus)
        ds = (rd.from_items(todo, override_num_blocks=len(todo))
              .flat_map(convert_episode, fn_kwargs={"cfg": cfg}, num_cpus=cfg.convert_cpus)
              .map_batches(EmbedAndWrite, batch_size=1, batch_format="pyarrow", fn_constructor_kwargs={
                  "cfg": cfg, "embedder_factory": embedder_factory},
                  compute=rd.ActorPoolStrategy(min_size=1, max_size=n_actors),
                  num_gpus=1 if gpus >= 1 and cfg.embedder != "none" else 0,
                  num_cpus=1 if not gpus else 0.5))
        meter = Meter("dataset", "episodes", len(todo), write=None if cfg.progress else lambda text: None)
        try:
            for row in ds.iter_rows():
                before = len(ledger.finished) + len(ledger.quarantined)
                ledger.add(row)
                if len(ledger.finished) + len(ledger.quarantined) > before:  # an episode is done
                    quarantined = [f"quarantined {len(ledger.quarantined)}"] if ledger.quarantined else []
                    meter.update(len(ledger.finished) + len(ledger.quarantined), f"frames {ledger.frames:,}",
                                 rate(ledger.frames / max(meter.elapsed_s(), 1e-9), "frames"), *quarantined)
        except BaseException:
            # e.g. a lost node or Ctrl-C: what finished is recorded; a rerun resumes from there
            write_manifest(store, cfg, embed_dim)
            print(f"[generate_dataset] stopped after {len(ledger.finished)} finished episodes; rerun the same "
                  "command to resume", file=sys.stderr, flush=True)
            raise
        for eid, st in list(ledger.parts.items()):  # rows lost (should not happen): never leave half episodes
            ledger.quarantine(eid, st["task"], "incomplete: not all segments came back; rerun with "
                              "retry_quarantined=true")
    if cfg.embedder != "none":
        finished = shards.list_episodes(store)
        if finished:
            first = next(iter(finished.values()))["segments"][0]["file"]
            embed_dim = int(shards.read_segment(store, first, ["embeds"])["embeds"].shape[1])
    manifest = write_manifest(store, cfg, embed_dim)
    wall = time.perf_counter() - t0
    summary = {"episodes_written": len(ledger.finished), "episodes_quarantined": len(ledger.quarantined),
               "frames": ledger.frames, "hours_of_gameplay": round(ledger.seconds / 3600, 4),
               "wall_s": round(wall, 2), "frames_per_s": round(ledger.frames / wall, 1) if wall > 0 else 0.0,
               "dataset_episodes": manifest["counts"]["episodes"], "dataset_frames": manifest["counts"]["frames"],
               "quarantined_ids": ledger.quarantined, "output": cfg.output}
    print("[generate_dataset] summary: " + json.dumps({k: v for k, v in summary.items()
                                                       if k != "quarantined_ids"}), flush=True)
    store.write_json("summary.json", summary)  # written last: the job finished (manifest.json is written first)
    return summary


def _run(cfg: DataConfig) -> int:
    generate_dataset(cfg)  # prints its summary
    return 0


JOB = Job("dataset", DataConfig, _run, presets="data", errors=(SourceError,),
          summary="Recordings -> frames, actions, MineCLIP embeddings -> Parquet shards (config.yaml is saved in "
                  "the output by the job itself, also on s3://).",
          examples="""
          steve1 dataset --config world output=data/shards sources=[local:data/world/contractor]
          python jobs/generate_dataset.py output=/data/ds 'sources=[contractor:8.x]' num_episodes=10""")


def main(argv: list[str] | None = None) -> int:
    """`steve1 dataset [--config a.yaml ...] [key=value ...]`."""
    return run_job(JOB, argv)


__all__ = ["DataConfig", "convert_episode", "EmbedAndWrite", "generate_dataset", "main"]
