"""MineCLIP: key layout of attn.pth, golden outputs of the original code, embedder interface, files."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from steve1_ray.models.mineclip import (ATTN_MD5, MC_IMAGE_MEAN, MC_IMAGE_STD, MineCLIP, MineCLIPConfig,
                                        N_STATE_DICT_KEYS_ATTN, file_md5, load_mineclip, save_mineclip)

GOLDEN_PROMPTS = ["chop a tree", "dig as far as possible", "Look at the SKY!",
                  "get dirt, dig hole, dig dirt, gather a ton of dirt, collect dirt", "open inventory"]
GOLDEN_SEED = 1234


def canonical_key(key: str) -> str:
    """Aliased keys share one tensor: name them by their clip_model path."""
    if key.startswith("image_encoder."):
        return "clip_model.vision_model." + key[len("image_encoder."):]
    if key.startswith("reward_head.clip_model."):
        return key[len("reward_head."):]
    return key


def derived_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A deterministic, well-scaled weight for `key` from a generator seeded by the key's name.

    The same function fills the ORIGINAL MineCLIP when the golden fixture is made (see
    tests/fixtures/mineclip/README.md), so both models hold identical weights.
    """
    name = canonical_key(key)
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") & (2**63 - 1)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "logit_scale":
        return torch.full(shape, math.log(1 / 0.07))
    if leaf.endswith("residual_weight"):
        return 0.5 + 0.1 * z
    if leaf in ("cls_token", "pos_embed") or name.endswith(("token_embedding.weight", "pos_emb.emb.weight")):
        return 0.02 * z
    if leaf == "projection":
        return z / math.sqrt(shape[0])
    if len(shape) == 1:
        return 1.0 + 0.1 * z if leaf == "weight" else 0.02 * z
    return z / math.sqrt(int(np.prod(shape[1:])))


def derived_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every state_dict key filled by `derived_tensor`; aliases get the very same tensor."""
    by_name: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if canonical_key(k) not in by_name:
            by_name[canonical_key(k)] = derived_tensor(k, tuple(v.shape))
    return {k: by_name[canonical_key(k)] for k in model.state_dict()}


def golden_frames(batch: int = 2, length: int = 8) -> np.ndarray:
    """(B, L, 160, 256, 3) uint8: smooth random images (a coarse grid upsampled) plus pixel noise."""
    rng = np.random.default_rng(GOLDEN_SEED)
    coarse = rng.integers(0, 256, size=(batch, length, 10, 16, 3)).astype(np.float64)
    smooth = coarse.repeat(16, axis=2).repeat(16, axis=3)
    noise = rng.normal(0, 20, size=smooth.shape)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return dict(np.load(fixtures_dir / "mineclip" / "golden_attn.npz"))


@pytest.fixture(scope="module")
def attn_model():
    with torch.device("meta"):  # skip the random init: every tensor is replaced below
        model = MineCLIP(MineCLIPConfig.preset("attn"))
    model.load_state_dict(derived_state_dict(model), strict=True, assign=True)
    model.pixel_mean, model.pixel_std = (torch.tensor(v).view(1, 3, 1, 1) * 255.0 for v in (MC_IMAGE_MEAN, MC_IMAGE_STD))
    return model.eval()


def test_attn_state_dict_layout(attn_model, golden):
    sd = attn_model.state_dict()
    assert len(sd) == N_STATE_DICT_KEYS_ATTN == 788
    assert list(sd) == [str(k) for k in golden["keys"]]  # same names and order as the original
    assert [tuple(v.shape) for v in sd.values()] == [tuple(s[s >= 0]) for s in golden["shapes"]]
    assert sd["image_encoder.pos_embed"].data_ptr() == sd["clip_model.vision_model.pos_embed"].data_ptr()
    assert sd["reward_head.clip_model.logit_scale"].data_ptr() == sd["clip_model.logit_scale"].data_ptr()
    assert sum(p.numel() for p in attn_model.parameters()) == 158_537_730


def test_attn_matches_original_outputs(attn_model, golden):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    frames = golden_frames()
    np.testing.assert_array_equal(frames[0, 0, :2, :4, 0], golden["frames_probe"])
    with torch.no_grad():
        feats = attn_model.encode_frames(frames.reshape(-1, 160, 256, 3))
        video = attn_model.pool_features(feats.view(2, 8, -1))
        tokens = attn_model.tokenize(GOLDEN_PROMPTS)
        text = attn_model.encode_text(GOLDEN_PROMPTS)
        logits = attn_model.score(video, text)
    np.testing.assert_array_equal(tokens.numpy(), golden["tokens"])
    np.testing.assert_allclose(feats.numpy(), golden["frame_features"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(video.numpy(), golden["video_embeds"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(text.numpy(), golden["text_embeds"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits.numpy(), golden["reward_logits"], atol=1e-3, rtol=1e-5)


@pytest.fixture(scope="module")
def debug_model():
    return load_mineclip(cfg="debug", seed=0)


def test_encode_video_equals_pooled_frames(debug_model):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 16, 160, 256, 3), dtype=np.uint8)
    video = debug_model.encode_video(frames, batch_size=7)
    assert video.shape == (3, debug_model.embed_dim) and video.dtype == torch.float32
    feats = debug_model.encode_frames(torch.from_numpy(frames).flatten(0, 1))
    pooled = debug_model.pool_features(feats.view(3, 16, -1))
    torch.testing.assert_close(video, pooled, atol=1e-5, rtol=0)
    # Sliding windows over cached per-frame features == embedding each window from pixels.
    windows = np.stack([frames[0, i:i + 8] for i in range(9)])
    slid = debug_model.pool_features(feats[:16].unfold(0, 8, 1).permute(0, 2, 1))
    torch.testing.assert_close(debug_model.encode_video(windows), slid, atol=1e-5, rtol=0)
    # Channels-first frames (STEVE-1's storage layout) give the same features.
    chw = torch.from_numpy(frames[0]).permute(0, 3, 1, 2)
    torch.testing.assert_close(debug_model.encode_frames(chw), feats[:16], atol=1e-5, rtol=0)


def test_text_and_order_invariance(debug_model):
    a = debug_model.encode_text(["chop a tree", "look at the sky"])
    b = debug_model.encode_text(["look at the sky", "chop a tree"])
    assert a.shape == (2, 512)
    torch.testing.assert_close(a, b.flip(0), atol=1e-5, rtol=0)
    assert not torch.allclose(a[0], a[1])
    tokens = debug_model.tokenize(["chop a tree"])
    assert tokens.shape == (1, 77) and tokens.dtype == torch.int64
    torch.testing.assert_close(debug_model.encode_text(tokens), a[:1])


def test_configurable_output_dim():
    m = load_mineclip(cfg=MineCLIPConfig.preset("debug", embed_dim=768), seed=1)
    assert m.embed_dim == 768
    assert m.encode_video(np.zeros((1, 16, 160, 256, 3), np.uint8)).shape == (1, 768)
    assert m.encode_text(["x"]).shape == (1, 768)


def test_crop_sees_only_its_region(tmp_path):
    cfg = MineCLIPConfig.preset("debug", patch_size=16, crop=(48, 64, 112, 128), embed_dim=32)
    m = load_mineclip(cfg=cfg, seed=0)
    assert m.image_encoder.pos_embed.shape[0] == (112 // 16) * (128 // 16) + 1  # the ViT grid is the crop's
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (2, 160, 256, 3), dtype=np.uint8)
    b = a.copy()
    b[:, :48] = 0  # outside the crop: no effect
    b[:, :, 200:] = 255
    with torch.no_grad():
        torch.testing.assert_close(m.forward_frames(torch.from_numpy(a)), m.forward_frames(torch.from_numpy(b)))
        c = a.copy()
        c[:, 100, 100] = 255 - c[:, 100, 100]  # inside: it does
        assert not torch.allclose(m.forward_frames(torch.from_numpy(a)), m.forward_frames(torch.from_numpy(c)))
    loaded = load_mineclip(save_mineclip(m, tmp_path / "crop.pth"))  # the crop travels with the checkpoint
    assert loaded.cfg.crop == (48, 64, 112, 128)
    with pytest.raises(ValueError, match="crop"):
        MineCLIPConfig.preset("debug", patch_size=16, crop=(100, 0, 80, 128))  # outside the frame
    with pytest.raises(ValueError, match="crop"):
        MineCLIPConfig.preset("debug", patch_size=16, crop=(0, 0, 100, 128))  # not whole patches


def test_temporal_delta_sees_change_with_the_same_weights(tmp_path):
    from steve1_ray.data.embed import window_embeds, window_embeds_per_window

    plain = load_mineclip(cfg=MineCLIPConfig.preset("debug", embed_dim=32), seed=0)
    delta = load_mineclip(cfg=MineCLIPConfig.preset("debug", embed_dim=32, temporal_delta=True), seed=0)
    assert delta.state_dict().keys() == plain.state_dict().keys()  # no new weights: the attn.pth layout
    delta.load_state_dict(plain.state_dict())
    feats = torch.randn(3, 16, 32)
    with torch.no_grad():
        # the input is the 16 features and their 15 successive differences (positions 16..30)
        expected = plain.temporal_encoder(torch.cat([feats, feats[:, 1:] - feats[:, :-1]], dim=1))
        torch.testing.assert_close(delta.pool_features(feats), expected)
        assert not torch.allclose(delta.pool_features(feats), plain.pool_features(feats))
    # computed inside the pooling, so cached per-frame features still give the per-window result exactly
    frames = np.random.default_rng(2).integers(0, 256, (19, 160, 256, 3), dtype=np.uint8)
    cached, _ = window_embeds(delta, frames, frame_batch=7)
    per_window, _ = window_embeds_per_window(delta, frames, window_batch=2)
    assert np.abs(cached - per_window).max() < 1e-4
    assert load_mineclip(save_mineclip(delta, tmp_path / "delta.pth")).cfg.temporal_delta is True
    with pytest.raises(ValueError, match="features must be"):
        delta.pool_features(torch.zeros(1, 17, 32))  # 33 tokens > temporal_max_seq_len 32
    with pytest.raises(ValueError, match="temporal_delta"):
        MineCLIPConfig.preset("debug", temporal_delta=True, temporal_max_seq_len=30)
    with pytest.raises(ValueError, match="temporal_delta"):
        MineCLIPConfig.preset("debug", temporal_delta="yes")


def test_save_load_roundtrip(tmp_path, debug_model):
    path = save_mineclip(debug_model, tmp_path / "mc.pth")
    raw = torch.load(path, weights_only=True)
    assert all(k.startswith("model.") for k in raw["state_dict"])
    assert len(raw["state_dict"]) == len(debug_model.state_dict())
    loaded = load_mineclip(path)  # config read back from the file
    assert loaded.cfg == debug_model.cfg
    text = ["go explore"]
    torch.testing.assert_close(loaded.encode_text(text), debug_model.encode_text(text), atol=0, rtol=0)
    # The released layout (no config entry) needs the cfg.
    torch.save({"state_dict": raw["state_dict"]}, tmp_path / "bare.pth")
    assert load_mineclip(tmp_path / "bare.pth", cfg="debug").cfg.vision_width == 64
    with pytest.raises(ValueError, match="shape"):
        load_mineclip(tmp_path / "bare.pth", cfg=MineCLIPConfig.preset("debug", vision_width=128, vision_heads=2))
    md5 = file_md5(path)
    assert load_mineclip(path, md5=md5).embed_dim == 512
    # Non-tensor objects in the file: refused unless the checksum is verified.
    import argparse
    torch.save({"state_dict": raw["state_dict"], "hparams": argparse.Namespace(lr=1)}, tmp_path / "pl.pth")
    with pytest.raises(ValueError, match="md5='official'"):
        load_mineclip(tmp_path / "pl.pth", cfg="debug")
    assert load_mineclip(tmp_path / "pl.pth", cfg="debug", md5=file_md5(tmp_path / "pl.pth")).embed_dim == 512
    with pytest.raises(ValueError, match=ATTN_MD5):
        load_mineclip(path, md5="official")


def test_bad_inputs(tmp_path, debug_model):
    with pytest.raises(ValueError, match="160, 256, 3"):
        debug_model.encode_frames(np.zeros((2, 128, 128, 3), np.uint8))
    with pytest.raises(ValueError, match="encode_video"):
        debug_model.encode_frames(np.zeros((1, 2, 160, 256, 3), np.uint8))
    with pytest.raises(ValueError, match="features must be"):
        debug_model.pool_features(torch.zeros(2, 16, 7))
    with pytest.raises(ValueError, match="unknown MineCLIP preset"):
        MineCLIPConfig.preset("huge")
    with pytest.raises(ValueError, match="vision_heads"):
        MineCLIPConfig(vision_heads=7)
    with pytest.raises(FileNotFoundError, match="attn.pth"):
        load_mineclip(tmp_path / "nope.pth")
    torch.save({"state_dict": {"model.foo": torch.zeros(1)}}, tmp_path / "wrong.pth")
    with pytest.raises(KeyError, match="missing"):
        load_mineclip(tmp_path / "wrong.pth", cfg="debug")


def test_whitened_goal_space_round_trips_and_only_changes_goals(tmp_path, debug_model):
    from steve1_ray.data.embed import window_embeds, window_embeds_per_window
    from steve1_ray.models.mineclip import fit_goal_whitening

    rng = np.random.default_rng(0)
    # a skewed cloud: one direction 30x the others, as a small world embedder's pooled embeddings are
    x = rng.normal(size=(2000, 512)).astype(np.float32) * np.r_[30.0, np.ones(511)].astype(np.float32) + 3.0
    mean, matrix = fit_goal_whitening(x, rel_eps=1e-6)
    y = (x - mean) @ matrix.T
    assert np.allclose(y.mean(0), 0, atol=1e-3)
    cov = np.cov(y[:, :8].T)  # the fit sample itself: identity covariance
    assert np.allclose(np.diag(cov), 1, atol=1e-3) and abs(cov[0, 1]) < 1e-3
    floored = fit_goal_whitening(x, rel_eps=0.5)[1]  # weak directions floored at half the largest eigenvalue
    assert np.linalg.eigvalsh(floored.astype(np.float64)).max() < 1.5 / 30
    for bad in (x[:1], np.full((4, 3), np.nan)):
        with pytest.raises(ValueError, match="finite embeddings"):
            fit_goal_whitening(bad)

    cfg = MineCLIPConfig.preset("debug", goal_whiten=True)
    white = MineCLIP(cfg)
    white.load_state_dict({**debug_model.state_dict(), "goal_mean": white.goal_mean,
                           "goal_matrix": white.goal_matrix}, strict=True)
    white.eval().set_goal_whitening(mean, matrix)
    frames = torch.from_numpy(rng.integers(0, 255, size=(2, 16, 160, 256, 3), dtype=np.uint8))
    raw = debug_model.encode_video(frames)
    want = (raw - torch.from_numpy(mean)) @ torch.from_numpy(matrix).T
    torch.testing.assert_close(white.encode_video(frames), want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(white.encode_text(["chop a tree"]), debug_model.encode_text(["chop a tree"]))
    feats = debug_model.encode_frames(frames[0])[None]
    torch.testing.assert_close(white.pool_features(feats), debug_model.pool_features(feats))  # training path
    # the dataset job's cached-feature path whitens as encode_video does
    clip = frames[0].numpy()
    fast, valid = window_embeds(white, clip)
    slow, _ = window_embeds_per_window(white, clip)
    np.testing.assert_allclose(fast[valid], want[:1].numpy(), atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(fast, slow, atol=1e-3, rtol=1e-4)
    # the file keeps the fit and the flag; an unwhitened config refuses a fit
    loaded = load_mineclip(save_mineclip(white, tmp_path / "white.pth"))
    assert loaded.cfg.goal_whiten and torch.equal(loaded.goal_matrix, white.goal_matrix)
    torch.testing.assert_close(loaded.encode_video(frames), white.encode_video(frames))
    with pytest.raises(ValueError, match="goal_whiten=True"):
        debug_model.set_goal_whitening(mean, matrix)
    with pytest.raises(ValueError, match="finite mean"):
        white.set_goal_whitening(mean[:3], matrix)
    with pytest.raises(ValueError, match="goal_whiten"):
        MineCLIPConfig.preset("debug", goal_whiten="yes")
