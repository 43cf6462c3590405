"""Parquet shards: schema, atomic writes, reader round trips (local path and file:// URI)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steve1_ray.data import shards


def _write_episode(root, eid="ep", n=70, seg=32, dim=8, codec="jpeg", seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
    frames[:, :64] = 90  # some flat area, like real frames
    data = {"frames": frames, "buttons": rng.integers(0, 8641, n), "camera": rng.integers(0, 121, n),
            "env_buttons": rng.integers(0, 2**23, n).astype(np.int32),
            "env_camera": rng.normal(size=(n, 2)).astype(np.float32),
            "embeds": rng.normal(size=(n, dim)).astype(np.float32), "embed_valid": np.arange(n) >= 15}
    store = shards.Store(root)
    segs = []
    for k, s in enumerate(range(0, n, seg)):
        e = min(n, s + seg)
        table = shards.segment_table(eid, k, s, shards.encode_frames(frames[s:e], codec),
                                     *(data[c][s:e] for c in ("buttons", "camera", "env_buttons", "env_camera",
                                                              "embeds", "embed_valid")), frame_codec=codec)
        segs.append(shards.write_segment(store, table))
    store.write_json(f"index/{eid}.json", {"episode_id": eid, "n_frames": n, "n_segments": len(segs),
                                           "segments": segs})
    return data, segs


@pytest.mark.parametrize("codec", ["raw", "png", "jpeg"])
def test_round_trip(tmp_path, codec):
    data, segs = _write_episode(tmp_path, codec=codec)
    ep = shards.load_episode(tmp_path, "ep")
    assert ep["frames"].shape == (70, 128, 128, 3) and ep["frames"].dtype == np.uint8
    if codec == "jpeg":
        assert np.abs(ep["frames"][:, :40].astype(int) - 90).max() <= 3  # lossy but close away from edges
    else:
        assert np.array_equal(ep["frames"], data["frames"])
    for c in ("buttons", "camera", "env_buttons", "env_camera", "embeds", "embed_valid"):
        assert np.array_equal(ep[c], data[c]), c
    assert ep["buttons"].dtype == np.int64 and ep["embeds"].dtype == np.float32 and ep["embed_valid"].dtype == bool
    assert [s["n_frames"] for s in segs] == [32, 32, 6]


def test_schema_and_metadata(tmp_path):
    _, segs = _write_episode(tmp_path, dim=16)
    schema = pq.read_schema(tmp_path / segs[0]["file"])
    assert schema.names == ["episode_id", "segment", "start", "n_frames", "frames", "buttons", "camera",
                            "env_buttons", "env_camera", "embeds", "embed_valid"]
    assert schema.field("embeds").type == pa.list_(pa.list_(pa.float32(), 16))
    assert b'"frame_codec": "jpeg"' in schema.metadata[shards.METADATA_KEY]


def test_ranges_read_only_what_is_asked(tmp_path):
    data, _ = _write_episode(tmp_path, codec="png")
    part = shards.load_episode(tmp_path, "ep", start=30, end=40, columns=["frames", "buttons"])
    assert set(part) == {"frames", "buttons", "episode_id"}
    assert np.array_equal(part["frames"], data["frames"][30:40])
    assert np.array_equal(part["buttons"], data["buttons"][30:40])


def test_uri_and_listing(tmp_path):
    _write_episode(tmp_path, "a")
    _write_episode(tmp_path, "b", n=20)
    uri = f"file://{tmp_path}"
    assert sorted(shards.list_episodes(uri)) == ["a", "b"]
    assert shards.load_episode(uri, "b")["frames"].shape == (20, 128, 128, 3)
    segs = list(shards.iter_segments(uri, ["a"], columns=["start", "n_frames"]))
    assert [(s["start"], s["n_frames"]) for s in segs] == [(0, 32), (32, 32), (64, 6)]
    paths = shards.shard_paths(uri)
    assert len(paths) == 4 and all(p.startswith("file://") for p in paths)


def test_writes_are_atomic_and_leave_nothing_behind(tmp_path):
    store = shards.Store(tmp_path)
    store.write_bytes("x/y.bin", b"abc")
    assert (tmp_path / "x" / "y.bin").read_bytes() == b"abc"
    assert list((tmp_path / "_tmp").iterdir()) == []


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        shards.read_manifest(tmp_path)
    with pytest.raises(KeyError, match="not a finished episode"):
        shards.load_episode(tmp_path, "nope")
    with pytest.raises(ValueError, match="codec"):
        shards.encode_frames(np.zeros((1, 128, 128, 3), np.uint8), "webp")


def test_damaged_shards_are_detected_on_read_and_skipped_in_training(tmp_path):
    """Index entries record each segment file's sha256; reads check it. A damaged file raises
    CorruptShardError (before: its bytes were decoded, or the run died at every retry), and the training
    sequences of that episode are replaced by the next readable ones and counted."""
    from steve1_ray.data.shards import CorruptShardError
    from steve1_ray.train.data import MultiSource, SequenceDataset
    from steve1_ray.train.synthetic import make_dataset

    root = make_dataset(str(tmp_path / "ds"), n_episodes=3, n_frames=48, embed_dim=8, seed=0)
    entry = shards.list_episodes(root)["synth001"]
    path = tmp_path / "ds" / entry["segments"][0]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern in the middle of the file
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match="sha256"):
        shards.load_episode(root, "synth001")
    assert shards.load_episode(root, "synth000")["frames"].shape == (48, 128, 128, 3)

    src = MultiSource([root])
    ids = sorted(src.episode_ids())
    ds = SequenceDataset(src, ids, T=16, min_btwn_goals=15, max_btwn_goals=30, p_uncond=0.0, seed=0)
    items = [ds.load(i, 0) for i in range(len(ds))]
    assert len(items) == len(ds) and all(it["img"].shape == (16, 128, 128, 3) for it in items)
    assert list(ds.corrupt) == [MultiSource.key(root, "synth001")] and "sha256" in next(iter(ds.corrupt.values()))
    bad = [i for i, spec in enumerate(ds.sequences) if spec.episode_id.endswith("synth001")]
    good_next = (bad[-1] + 1) % len(ds)
    assert np.array_equal(items[bad[0]]["img"], items[good_next]["img"])  # replaced by the next readable one
