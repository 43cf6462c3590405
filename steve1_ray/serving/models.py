"""Build what the service runs from a `ServeConfig`: the policy (ours or the original files), the
goal embedder (MineCLIP text/video encoder) and the prior; plus the clip -> goal computation (a prompt's
goal is `steve1_ray.agent.text_goal`, shared with the in-process agent)."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from steve1_ray.models.loading import load_goal_models as _load_goal_models
from steve1_ray.models.loading import checkpoint_files, load_policy_spec
from steve1_ray.serving.config import ServeConfig


def load_serving_policy(cfg: ServeConfig) -> torch.nn.Module:
    """`checkpoint` (a training checkpoint folder of ours) or `policy` + `weights`, on `cfg.device`, eval mode,
    stepping in `cfg.precision`."""
    from steve1_ray.agent import set_precision

    if cfg.checkpoint:
        model, weights = checkpoint_files(cfg.checkpoint)  # a folder only: never a preset with random weights
        return set_precision(load_policy_spec(model, weights, device=cfg.device), cfg.precision)
    return set_precision(load_policy_spec(cfg.policy, cfg.weights, device=cfg.device), cfg.precision)


def load_goal_models(cfg: ServeConfig, embed_dim: int | None = None):
    """(mineclip, prior): the configured files, or seeded random models of the policy's width (debug server)."""
    return _load_goal_models(cfg.mineclip, cfg.prior, device=cfg.device, embed_dim=embed_dim,
                             preset=None if cfg.mineclip else cfg.mineclip_preset, random_prior=True)


def clip_goal(mineclip, frames: Sequence[np.ndarray]) -> np.ndarray:
    """A short clip (1..window RGB frames, any size) -> MineCLIP video embedding (D,).

    Frames are resized to 256x160 with cv2 INTER_LINEAR (as STEVE-1's MineCLIP frames); a clip shorter
    than the 16-frame window is padded at the front with copies of its first frame."""
    h, w = mineclip.cfg.resolution
    window = mineclip.window
    small = [cv2.resize(np.ascontiguousarray(f), (w, h), interpolation=cv2.INTER_LINEAR) for f in frames]
    small = [small[0]] * (window - len(small)) + small[-window:]
    video = np.stack(small)[None]  # (1, L, 160, 256, 3) uint8
    return mineclip.encode_video(video).reshape(-1).float().cpu().numpy()
