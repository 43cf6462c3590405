"""A tiny, learnable shard dataset for tests and benchmarks of the training loop.

Each frame's colour and a stripe tell the action that was taken at that frame (one of a few button/camera
classes), so a policy can learn it and the loss must fall. The layout is the real one
(`steve1_ray.data.shards`: segment Parquet files + index/ + manifest.json), written with its writer.
"""
from __future__ import annotations

import numpy as np

BUTTON_CLASSES = np.array([0, 2, 4, 32])     # a few joint button indices (no-op, jump, attack, forward, ...)
CAMERA_CLASSES = np.array([60, 61, 49])


def synthetic_episode(n_frames: int, embed_dim: int, rng: np.random.Generator) -> dict:
    k = rng.integers(0, len(BUTTON_CLASSES), size=n_frames)
    c = rng.integers(0, len(CAMERA_CLASSES), size=n_frames)
    frames = np.empty((n_frames, 128, 128, 3), np.uint8)
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], np.uint8)
    frames[:] = palette[k][:, None, None, :]
    for i in range(n_frames):
        frames[i, :, 32 * c[i]:32 * c[i] + 32] = 255 - frames[i, 0, 0]
    frames = np.clip(frames.astype(np.int16) + rng.integers(-8, 9, size=frames.shape), 0, 255).astype(np.uint8)
    embeds = rng.standard_normal((n_frames, embed_dim)).astype(np.float32)
    valid = np.arange(n_frames) >= 15
    embeds[~valid] = 0
    return {"frames": frames, "buttons": BUTTON_CLASSES[k], "camera": CAMERA_CLASSES[c], "embeds": embeds,
            "embed_valid": valid}


def write_dataset(root: str, episodes: dict[str, dict], segment_len: int = 256, frame_codec: str = "jpeg") -> str:
    """Write {episode_id: arrays} as a shard dataset at `root` (the layout `steve1 dataset` writes)."""
    from steve1_ray.data import shards

    store = shards.Store(root)
    dims = set()
    for eid, ep in episodes.items():
        n = len(ep["buttons"])
        segments = []
        for k, s in enumerate(range(0, n, segment_len)):
            e = min(s + segment_len, n)
            table = shards.segment_table(
                eid, k, s, shards.encode_frames(ep["frames"][s:e], frame_codec), ep["buttons"][s:e],
                ep["camera"][s:e], np.zeros(e - s, np.int32), np.zeros((e - s, 2), np.float32),
                ep["embeds"][s:e], ep["embed_valid"][s:e], frame_codec=frame_codec)
            segments.append(shards.write_segment(store, table))
        dims.add(ep["embeds"].shape[1])
        store.write_json(f"index/{eid}.json", {"episode_id": eid, "n_frames": n, "segments": segments})
    store.write_json("manifest.json", {"episodes": sorted(episodes), "embed_dim": sorted(dims),
                                       "frame_codec": frame_codec, "source": "steve1_ray.train.synthetic"})
    return root


def make_dataset(root: str, n_episodes: int = 6, n_frames: int = 120, embed_dim: int = 16, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    episodes = {f"synth{i:03d}": synthetic_episode(n_frames, embed_dim, rng) for i in range(n_episodes)}
    return write_dataset(root, episodes)
