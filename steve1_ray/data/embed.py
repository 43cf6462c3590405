"""MineCLIP embeddings of every 16-frame window (stride 1) with each frame's ViT features computed once.

The original (STEVE-1 `embed_videos_mineclip_batched`) calls `encode_video` on each window t-15..t, so
every frame goes through the ViT 16 times. `encode_video = pool_features(encode_frames(.))`, and the
per-frame features do not depend on the window, so here each frame is encoded once and the temporal
pooling slides over the cached features:

    feats = model.encode_frames(frames)            # (N, D)   one ViT pass per frame
    windows = feats.unfold(0, 16, 1)               # (N-15, 16, D) views, no copy
    embeds[15:] = model.pool_features(windows)     # (N-15, D)   (then `model.to_goal`, see MineCLIPConfig)

The embedder is any object with `.encode_frames((N,160,256,3) uint8) -> (N,D)`, `.pool_features((B,L,D))
-> (B,D)`, `.encode_video((B,L,160,256,3)) -> (B,D)` and `.embed_dim` (steve1_ray.models.mineclip).
"""
from __future__ import annotations

import contextlib

import numpy as np

WINDOW = 16  # frames per MineCLIP video embedding


def _autocast(device, dtype: str):
    import torch

    if device.type == "cuda" and dtype in ("fp16", "bf16"):
        return torch.autocast("cuda", dtype=torch.float16 if dtype == "fp16" else torch.bfloat16)
    if device.type == "cpu" and dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _device_of(model):
    import torch

    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _no_embeds(model, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(zeros (n, D) float32, valid (n,) bool): rows t < 15 never get a full 16-frame window."""
    return np.zeros((n, int(model.embed_dim)), np.float32), np.arange(n) >= WINDOW - 1


def window_embeds(model, frames: np.ndarray, frame_batch: int = 64, window_batch: int = 512,
                  dtype: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Cached-feature method. frames (N, 160, 256, 3) uint8 RGB -> (embeds (N, D) float32, valid (N,) bool).

    embeds[t] embeds frames t-15..t (oldest first); rows t < 15 have no full window: zero, valid False.
    `dtype` "fp16"/"bf16" runs under autocast on a GPU (bf16 also on CPU); outputs are float32.
    """
    import torch

    n = len(frames)
    embeds, valid = _no_embeds(model, n)
    if n < WINDOW:
        return embeds, valid
    device = _device_of(model)
    with torch.inference_mode(), _autocast(device, dtype):
        feats = torch.cat([model.encode_frames(torch.from_numpy(np.ascontiguousarray(frames[i:i + frame_batch]))
                                               .to(device))
                           for i in range(0, n, frame_batch)])  # (N, D)
        windows = feats.unfold(0, WINDOW, 1).permute(0, 2, 1)  # (N-15, 16, D)
        to_goal = getattr(model, "to_goal", None) or (lambda x: x)  # a whitened world embedder's goal space
        pooled = [to_goal(model.pool_features(windows[i:i + window_batch]))
                  for i in range(0, len(windows), window_batch)]
        embeds[WINDOW - 1:] = torch.cat(pooled).float().cpu().numpy()
    return embeds, valid


def window_embeds_per_window(model, frames: np.ndarray, window_batch: int = 8,
                             dtype: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """The original's per-window method (every frame through the ViT 16 times); same outputs.

    Kept as the reference for tests and the benchmark.
    """
    import torch

    n = len(frames)
    embeds, valid = _no_embeds(model, n)
    if n < WINDOW:
        return embeds, valid
    device = _device_of(model)
    starts = np.arange(n - WINDOW + 1)
    with torch.inference_mode(), _autocast(device, dtype):
        for i in range(0, len(starts), window_batch):
            idx = starts[i:i + window_batch, None] + np.arange(WINDOW)  # (B, 16)
            video = torch.from_numpy(np.ascontiguousarray(frames[idx])).to(device)  # (B, 16, 160, 256, 3)
            out = model.encode_video(video)
            embeds[WINDOW - 1 + i:WINDOW - 1 + i + len(idx)] = out.float().cpu().numpy()
    return embeds, valid
