"""Cached-feature window embeddings equal the original per-window computation."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
mineclip = pytest.importorskip("steve1_ray.models.mineclip")

from steve1_ray.data.embed import WINDOW, window_embeds, window_embeds_per_window  # noqa: E402
from steve1_ray.models.loading import load_embedder  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_embedder("debug", device="cpu")


def test_cached_equals_per_window_fp32(model):
    frames = np.random.default_rng(0).integers(0, 256, (27, 160, 256, 3), dtype=np.uint8)
    cached, valid = window_embeds(model, frames, frame_batch=10, window_batch=7)
    per_window, valid2 = window_embeds_per_window(model, frames, window_batch=5)
    assert cached.shape == (27, model.embed_dim) and cached.dtype == np.float32
    assert np.array_equal(valid, valid2) and valid.tolist() == [False] * 15 + [True] * 12
    assert np.abs(cached - per_window).max() < 1e-4
    assert (cached[:15] == 0).all() and np.abs(cached[15:]).sum() > 0
    # window t really covers frames t-15..t: changing frame 8 changes embeds 15..23 only (windows 8..23)
    frames2 = frames.copy()
    frames2[8] = 255 - frames2[8]
    changed = np.abs(window_embeds(model, frames2)[0] - cached).max(axis=1) > 1e-6
    assert changed.tolist() == [False] * 15 + [True] * 9 + [False] * 3


def test_direct_encode_video_matches(model):
    frames = np.random.default_rng(1).integers(0, 256, (WINDOW + 2, 160, 256, 3), dtype=np.uint8)
    cached, _ = window_embeds(model, frames)
    direct = model.encode_video(frames[None, 2:WINDOW + 2]).numpy()[0]
    np.testing.assert_allclose(cached[WINDOW + 1], direct, atol=1e-4)


def test_short_input_has_no_valid_rows(model):
    embeds, valid = window_embeds(model, np.zeros((10, 160, 256, 3), np.uint8))
    assert embeds.shape == (10, model.embed_dim) and not valid.any() and (embeds == 0).all()


def test_seeded_random_weights_agree_across_loads():
    a = load_embedder("debug", device="cpu")
    b = load_embedder("debug", device="cpu")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
