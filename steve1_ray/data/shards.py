"""Parquet shards of converted episodes: the schema, an atomic writer and the reader training uses.

Layout of a dataset root (a local path or a `s3://` / `gs://` / `file://` URI):

    <root>/manifest.json                   counts, sources, options, schema, episodes, quarantined
    <root>/shards/<episode_id>-<k>.parquet one file per segment k (5 digits) of an episode, one row each
    <root>/index/<episode_id>.json         per-episode entry; written last, so it marks "finished"
    <root>/quarantine/<episode_id>.json    why an episode was refused
    <root>/_tmp/                           in-flight writes, moved into place when complete

Row schema (one row per segment = a contiguous run of <= segment_len frames of an episode):

    episode_id  string
    segment     int32                      k, 0-based
    start       int32                      index of the segment's first frame in the episode
    n_frames    int32                      n
    frames      list<binary>               n encoded 128x128 RGB images (JPEG by default; see docs/data.md)
    buttons     list<int16>                policy joint button index (0..8640)
    camera      list<int16>                policy joint camera index (0..120)
    env_buttons list<int32>                the 23 MineRL buttons as a bitmask (bit i = ENV_BUTTON_KEYS[i])
    env_camera  list<fixed_size_list<float32, 2>>   env camera [pitch, yaw] in degrees
    embeds      list<fixed_size_list<float32, D>>   MineCLIP embedding of frames t-15..t (zeros if invalid)
    embed_valid list<bool>                 False for the first 15 frames of an episode (no full window)

The schema metadata key `steve1_ray` holds {"version", "frame_codec", "frame_shape", "embed_dim"}.

Reader:
    read_manifest(root) -> dict;  list_episodes(root) -> {episode_id: entry}
    load_episode(root, episode_id, start=None, end=None) -> dict of NumPy arrays
    iter_segments(root, episode_ids=None, columns=None) -> dicts, one per segment
"""
from __future__ import annotations

import hashlib
import io
import json
import posixpath
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
FRAME_SHAPE = (128, 128, 3)
FRAME_CODECS = ("jpeg", "png", "raw")
METADATA_KEY = b"steve1_ray"


def shard_schema(embed_dim: int, frame_codec: str = "jpeg") -> pa.Schema:
    """The Arrow schema of one segment row (see the module docstring)."""
    fields = [
        pa.field("episode_id", pa.string()),
        pa.field("segment", pa.int32()),
        pa.field("start", pa.int32()),
        pa.field("n_frames", pa.int32()),
        pa.field("frames", pa.list_(pa.binary())),
        pa.field("buttons", pa.list_(pa.int16())),
        pa.field("camera", pa.list_(pa.int16())),
        pa.field("env_buttons", pa.list_(pa.int32())),
        pa.field("env_camera", pa.list_(pa.list_(pa.float32(), 2))),
        pa.field("embeds", pa.list_(pa.list_(pa.float32(), embed_dim))),
        pa.field("embed_valid", pa.list_(pa.bool_())),
    ]
    meta = {"version": SCHEMA_VERSION, "frame_codec": frame_codec, "frame_shape": list(FRAME_SHAPE),
            "embed_dim": embed_dim}
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(meta).encode()})


# --------------------------------------------------------------------------------------------------
# Frame codec


def encode_frames(frames: np.ndarray, codec: str = "jpeg", quality: int = 95) -> list[bytes]:
    """(n, 128, 128, 3) uint8 RGB -> one encoded image per frame."""
    if codec == "raw":
        return [np.ascontiguousarray(f).tobytes() for f in frames]
    if codec == "jpeg":
        ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif codec == "png":
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]
    else:
        raise ValueError(f"frame codec {codec!r} is unknown; use one of {FRAME_CODECS}")
    out = []
    for f in frames:
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(f[..., ::-1]), params)  # cv2 wants BGR
        if not ok:
            raise RuntimeError(f"cv2.imencode({ext}) failed on a frame of shape {f.shape}")
        out.append(buf.tobytes())
    return out


def decode_frames(blobs: Iterable[bytes], codec: str = "jpeg") -> np.ndarray:
    """Encoded images -> (n, 128, 128, 3) uint8 RGB."""
    blobs = list(blobs)
    out = np.empty((len(blobs), *FRAME_SHAPE), np.uint8)
    for i, b in enumerate(blobs):
        if codec == "raw":
            out[i] = np.frombuffer(b, np.uint8).reshape(FRAME_SHAPE)
        else:
            img = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"frame {i} cannot be decoded as {codec}")
            cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out[i])
    return out


# --------------------------------------------------------------------------------------------------
# Filesystem


class Store:
    """A dataset root on any pyarrow filesystem (local path, file://, s3://, gs://)."""

    def __init__(self, root: str | Path):
        root = str(root)
        if "://" in root:
            self.fs, self.root = pafs.FileSystem.from_uri(root)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(root).resolve())
        self.uri = root

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def read_json(self, rel: str):
        return json.loads(self.read_bytes(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Atomic: the bytes go to _tmp/ first and are moved into place once complete."""
        final = self.path(rel)
        tmp = self.path("_tmp", f"{posixpath.basename(rel)}.{uuid.uuid4().hex}")
        self.fs.create_dir(posixpath.dirname(final), recursive=True)
        self.fs.create_dir(posixpath.dirname(tmp), recursive=True)
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, final)

    def write_json(self, rel: str, obj) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except (FileNotFoundError, OSError):
            pass

    def list(self, rel: str, suffix: str = "") -> list[str]:
        """File names directly under `rel` ending in `suffix` ([] if the folder is absent)."""
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True)
        return sorted(posixpath.basename(i.path) for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File and i.path.endswith(suffix))


# --------------------------------------------------------------------------------------------------
# Writer


def segment_file(episode_id: str, segment: int) -> str:
    return f"shards/{episode_id}-{segment:05d}.parquet"


def segment_table(episode_id: str, segment: int, start: int, frames_encoded: list[bytes],
                  buttons: np.ndarray, camera: np.ndarray, env_buttons: np.ndarray, env_camera: np.ndarray,
                  embeds: np.ndarray, embed_valid: np.ndarray, frame_codec: str = "jpeg") -> pa.Table:
    """One segment as a one-row table with the shard schema. Arrays are per frame, length n."""
    n = len(frames_encoded)
    embeds = np.asarray(embeds, np.float32).reshape(n, -1)
    dim = embeds.shape[1]
    for name, arr in (("buttons", buttons), ("camera", camera), ("env_buttons", env_buttons),
                      ("env_camera", env_camera), ("embed_valid", embed_valid)):
        if len(arr) != n:
            raise ValueError(f"segment {episode_id}/{segment}: {name} has {len(arr)} entries, frames {n}")

    def fixed(a: np.ndarray, width: int) -> pa.Array:
        flat = pa.array(np.ascontiguousarray(a, np.float32).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, width)

    def one(values: pa.Array) -> pa.Array:  # wrap n values as a single list element
        return pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)

    schema = shard_schema(dim, frame_codec)
    cols = [
        pa.array([episode_id], pa.string()),
        pa.array([segment], pa.int32()),
        pa.array([start], pa.int32()),
        pa.array([n], pa.int32()),
        one(pa.array(frames_encoded, pa.binary())),
        one(pa.array(np.asarray(buttons, np.int16))),
        one(pa.array(np.asarray(camera, np.int16))),
        one(pa.array(np.asarray(env_buttons, np.int32))),
        one(fixed(np.asarray(env_camera).reshape(n, 2), 2)),
        one(fixed(embeds, dim)),
        one(pa.array(np.asarray(embed_valid, bool))),
    ]
    return pa.Table.from_arrays(cols, schema=schema)


def write_segment(store: Store, table: pa.Table) -> dict:
    """Write a one-row segment table atomically; returns its index entry (file, bytes, sha256, ...)."""
    episode_id = table.column("episode_id")[0].as_py()
    segment = table.column("segment")[0].as_py()
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", use_dictionary=["episode_id"], write_statistics=False)
    data = buf.getvalue()
    rel = segment_file(episode_id, segment)
    store.write_bytes(rel, data)
    return {"file": rel, "segment": segment, "start": table.column("start")[0].as_py(),
            "n_frames": table.column("n_frames")[0].as_py(), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


# --------------------------------------------------------------------------------------------------
# Reader


def read_manifest(root: str | Path) -> dict:
    """The manifest.json of a dataset root (raises FileNotFoundError naming the fix if absent)."""
    store = Store(root)
    if not store.exists("manifest.json"):
        raise FileNotFoundError(f"{root}: no manifest.json; is this a dataset root written by "
                                "jobs/generate_dataset.py (or did that run stop before its end)?")
    return store.read_json("manifest.json")


def list_episodes(root: str | Path) -> dict[str, dict]:
    """{episode_id: index entry} of every finished episode, read from index/ (always current)."""
    store = Store(root) if not isinstance(root, Store) else root
    out = {}
    for name in store.list("index", ".json"):
        entry = store.read_json(f"index/{name}")
        out[entry["episode_id"]] = entry
    return out


def _segment_arrays(table: pa.Table, codec: str, columns: Iterable[str] | None, frame_slice=slice(None)) -> dict:
    """One-row segment table -> dict of NumPy arrays (frames decoded)."""
    out: dict = {}
    names = set(table.column_names if columns is None else columns) & set(table.column_names)
    for name in names:
        col = table.column(name).combine_chunks()
        if name in ("episode_id", "segment", "start", "n_frames"):
            out[name] = col[0].as_py()
            continue
        values = col.values  # flatten the single list
        if name == "frames":
            out[name] = decode_frames(values.to_pylist()[frame_slice], codec)
        elif name in ("env_camera", "embeds"):
            width = values.type.list_size
            out[name] = values.values.to_numpy(zero_copy_only=False).reshape(-1, width)[frame_slice]
        elif name == "embed_valid":
            out[name] = values.to_numpy(zero_copy_only=False).astype(bool)[frame_slice]
        else:
            arr = values.to_numpy(zero_copy_only=False)
            out[name] = (arr.astype(np.int64) if name in ("buttons", "camera") else arr)[frame_slice]
    return out


def _codec(table: pa.Table) -> str:
    meta = table.schema.metadata or {}
    return json.loads(meta.get(METADATA_KEY, b"{}")).get("frame_codec", "jpeg")


class CorruptShardError(OSError):
    """A segment file's bytes do not match the sha256 its episode's index entry recorded."""


_VERIFIED: set[tuple[str, str, str]] = set()
"""(root, file, sha256) of the segment files this process has checked; later reads read only their columns"""


def _read_verified(store: Store, rel: str, sha256: str | None, columns: list[str] | None) -> pa.Table:
    """The segment table; the first read of a file in this process checks the whole file against `sha256`
    (when the index recorded one), later reads fetch only `columns`."""
    key = (store.root, rel, sha256 or "")
    if sha256 is None or key in _VERIFIED:
        with store.fs.open_input_file(store.path(rel)) as f:
            return pq.read_table(f, columns=columns)
    with store.fs.open_input_file(store.path(rel)) as f:
        data = f.read()
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise CorruptShardError(f"{store.path(rel)}: sha256 {got[:12]}... does not match the index's "
                                    f"{sha256[:12]}... ({len(data)} bytes): the file is damaged; rebuild the episode "
                                    f"with `steve1 dataset` (delete its index entry first)")
        _VERIFIED.add(key)
    return pq.read_table(pa.BufferReader(data), columns=columns)


def read_segment(root: str | Path | Store, rel: str, columns: Iterable[str] | None = None,
                 sha256: str | None = None) -> dict:
    """One segment file (path relative to root) -> dict of NumPy arrays; checked against `sha256` if given."""
    store = root if isinstance(root, Store) else Store(root)
    table = _read_verified(store, rel, sha256, list(columns) if columns is not None else None)
    return _segment_arrays(table, _codec(table), columns)


def load_episode(root: str | Path, episode_id: str, start: int | None = None, end: int | None = None,
                 columns: Iterable[str] | None = None) -> dict:
    """One finished episode (or frames [start, end) of it) -> dict of NumPy arrays:

    frames (N, 128, 128, 3) uint8 RGB; buttons, camera (N,) int64 policy indices; env_buttons (N,) int32;
    env_camera (N, 2) float32 degrees; embeds (N, D) float32; embed_valid (N,) bool; plus episode_id.
    Only the segments overlapping [start, end) are read, and only their frames in range are decoded. Each file
    read is checked against the sha256 in the index entry (`CorruptShardError` if it does not match).
    """
    store = Store(root)
    rel = f"index/{episode_id}.json"
    if not store.exists(rel):
        raise KeyError(f"episode {episode_id!r} is not a finished episode of {root} "
                       "(see list_episodes(root) for those that are)")
    entry = store.read_json(rel)
    n = entry["n_frames"]
    start = 0 if start is None else max(0, start)
    end = n if end is None else min(end, n)
    cols = [c for c in (columns or ["frames", "buttons", "camera", "env_buttons", "env_camera", "embeds",
                                    "embed_valid"]) if c not in ("episode_id", "segment", "start", "n_frames")]
    parts: dict[str, list] = {c: [] for c in cols}
    for seg in entry["segments"]:
        s0, s1 = seg["start"], seg["start"] + seg["n_frames"]
        if s1 <= start or s0 >= end:
            continue
        table = _read_verified(store, seg["file"], seg.get("sha256"), cols)  # CorruptShardError if damaged
        arrays = _segment_arrays(table, _codec(table), cols, slice(max(start, s0) - s0, min(end, s1) - s0))
        for c in cols:
            parts[c].append(arrays[c])
    out = {c: np.concatenate(v) if v else np.zeros((0,)) for c, v in parts.items()}
    out["episode_id"] = episode_id
    return out


def iter_segments(root: str | Path, episode_ids: Iterable[str] | None = None,
                  columns: Iterable[str] | None = None) -> Iterator[dict]:
    """Every segment of the given (default: all finished) episodes, in order, as dicts of arrays."""
    store = Store(root)
    entries = list_episodes(store)
    ids = sorted(entries) if episode_ids is None else list(episode_ids)
    for eid in ids:
        if eid not in entries:
            raise KeyError(f"episode {eid!r} is not a finished episode of {root}")
        for seg in entries[eid]["segments"]:
            yield read_segment(store, seg["file"], columns, seg.get("sha256"))


def shard_paths(root: str | Path, episode_ids: Iterable[str] | None = None) -> list[str]:
    """Full paths/URIs of the segment files of finished episodes (for `ray.data.read_parquet`)."""
    store = Store(root)
    entries = list_episodes(store)
    ids = sorted(entries) if episode_ids is None else list(episode_ids)
    base = str(root).rstrip("/") if "://" in str(root) else store.root
    return [f"{base}/{seg['file']}" for eid in ids for seg in entries[eid]["segments"]]
