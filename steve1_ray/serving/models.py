"""Build what the service runs from a `ServeConfig`: the policy (ours or the original files), the
goal embedder (MineCLIP text/video encoder) and the prior; plus the prompt -> goal computations."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from steve1_ray.serving.config import ServeConfig


def load_serving_policy(cfg: ServeConfig) -> torch.nn.Module:
    """A checkpoint of ours (`<dir>/model/{policy.model, steve1.weights}`) or `policy` + `weights`."""
    from steve1_ray.models.policy import load_policy

    if cfg.checkpoint:
        from steve1_ray.train.checkpoint import MODEL_NAME, WEIGHTS_NAME

        root = Path(cfg.checkpoint)
        model_dir = root / "model" if (root / "model").is_dir() else root
        model, weights = model_dir / MODEL_NAME, model_dir / WEIGHTS_NAME
        if not model.is_file() or not weights.is_file():
            raise FileNotFoundError(f"checkpoint {root}: expected {MODEL_NAME} and {WEIGHTS_NAME} in {model_dir} "
                                    f"(a training checkpoint directory or its model/ folder)")
        policy = load_policy(str(model), str(weights))
    else:
        policy = load_policy(cfg.policy, cfg.weights)
    return policy.to(cfg.device).eval()


def load_goal_models(cfg: ServeConfig, embed_dim: int | None = None):
    """(mineclip, prior): the configured files, or seeded random debug models of the policy's width."""
    from steve1_ray.models.mineclip import MineCLIPConfig, load_mineclip

    if cfg.mineclip:
        mineclip = load_mineclip(cfg.mineclip, device=cfg.device)  # config: stored in ours, else `attn`
    else:
        overrides = {"embed_dim": embed_dim} if embed_dim else {}
        mineclip = load_mineclip(None, MineCLIPConfig.preset(cfg.mineclip_preset, **overrides), seed=0,
                                 device=cfg.device)
    if embed_dim is not None and mineclip.embed_dim != embed_dim:
        raise ValueError(f"MineCLIP embeds to {mineclip.embed_dim} values but the policy expects {embed_dim}; "
                         f"serve a matching pair (policy embed_dim == MineCLIP embed_dim)")
    prior = _load_prior(cfg, mineclip.embed_dim)
    return mineclip, prior


def _load_prior(cfg: ServeConfig, dim: int):
    try:
        from steve1_ray.models import prior as prior_mod
    except ImportError:
        if cfg.prior:
            raise
        return None  # no prior module: text prompts answer 503, embeddings and clips still work

    if cfg.prior:
        prior = prior_mod.load_prior(cfg.prior)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            prior = prior_mod.TranslatorVAE(input_dim=dim, hidden_dim=512, latent_dim=dim)
    return prior.to(cfg.device).eval()


def text_goal(mineclip, prior, prompt: str, prior_seed: int | None) -> np.ndarray:
    """Prompt -> MineCLIP text embedding -> one prior sample (seeded) = the visual goal embedding (D,)."""
    with torch.no_grad():
        text = mineclip.encode_text([prompt])  # (1, D)
        goal = prior.sample(text, seed=prior_seed)
    return goal.reshape(-1).float().cpu().numpy()


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
