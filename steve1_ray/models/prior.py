"""STEVE-1's prior: a conditional VAE that turns a text embedding into a visual goal embedding.

    text_embed (B, D) --[z ~ N(0, I) or z = 0]--> decoder([z, text]) --> visual goal embed (B, D)

Layout of the original `TranslatorVAE` (steve1/data/text_alignment/vae.py), so the released
`steve1_prior.pt` (a plain state_dict; input 512, hidden 512, latent 512) loads strictly:

    encoder: [visual, text] (2D) -> Linear H -> LN -> ReLU -> Linear H -> LN -> ReLU -> Linear 2L (mu | logvar)
    decoder: [z, text] (L + D)   -> Linear H -> LN -> ReLU -> Linear H -> LN -> ReLU -> Linear D

Training loss (as the original train_vae.py): beta * KL(q(z|v,t) || N(0, I)), summed over batch and
latent dims, plus the mean-squared reconstruction error. The dims are configurable so the prior
also fits other embedders (e.g. a 768-d one); `load_prior` reads them from the weight shapes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """N(0, I) draws from `generator` (on its own device, e.g. a CPU generator for a GPU model) or the global RNG."""
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


class TranslatorVAE(nn.Module):
    """Conditional VAE prior. Defaults are the released prior's dims (512 / 512 / 512)."""

    def __init__(self, input_dim: int = 512, hidden_dim: int = 512, latent_dim: int = 512):
        super().__init__()
        for name, v in (("input_dim", input_dim), ("hidden_dim", hidden_dim), ("latent_dim", latent_dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"TranslatorVAE {name}={v!r}: must be a positive integer")
        self.input_dim, self.hidden_dim, self.latent_dim = input_dim, hidden_dim, latent_dim
        self.encoder = _mlp(2 * input_dim, hidden_dim, 2 * latent_dim)
        self.decoder = _mlp(latent_dim + input_dim, hidden_dim, input_dim)

    @property
    def embed_dim(self) -> int:
        return self.input_dim

    def _check(self, x: Any, what: str) -> torch.Tensor:
        x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"{what} must be (B, {self.input_dim}), got {tuple(x.shape)}: "
                             "is the prior's input_dim the embedder's embed_dim?")
        p = self.decoder[0].weight
        return x.to(p.device, p.dtype)

    def posterior(self, visual_embed: torch.Tensor, text_embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | visual, text): (mu, logvar), each (B, latent_dim)."""
        mu, logvar = self.encoder(torch.cat([visual_embed, text_embed], dim=1)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim), (B, D) -> predicted visual embedding (B, D)."""
        return self.decoder(torch.cat([z, text_embed], dim=1))

    def sample(self, text_embed, seed: int | None = None, deterministic: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Visual goal embedding for each text embedding: decode(z, text) with z ~ N(0, I).

        `deterministic=True` uses z = 0. `seed` (drawn on the CPU, so the same z on any device) or an
        explicit `generator` makes z reproducible;
        otherwise z comes from torch's global RNG, as in the original. Accepts (B, D) or (D,).
        """
        squeeze = getattr(text_embed, "ndim", None) == 1
        text = self._check(text_embed[None] if squeeze else text_embed, "text_embed")
        shape = (text.shape[0], self.latent_dim)
        if deterministic:
            z = torch.zeros(shape, device=text.device, dtype=text.dtype)
        else:
            if generator is None and seed is not None:
                generator = torch.Generator().manual_seed(int(seed))  # CPU: same z on every device
            z = _randn(shape, generator, text)
        out = self.decode(z, text)
        return out[0] if squeeze else out

    def forward(self, text_embed: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.sample(text_embed, deterministic=deterministic)

    def loss(self, visual_embed, text_embed, beta: float = 1.0, eps: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """beta * KL (summed over batch and latent) + MSE (mean), as the original's train step.

        z = mu + eps * exp(logvar / 2) with eps ~ N(0, I) (pass `eps` or a `generator` to fix it).
        Returns (loss, {"loss", "kl", "mse"}).
        """
        visual = self._check(visual_embed, "visual_embed")
        text = self._check(text_embed, "text_embed")
        if visual.shape[0] != text.shape[0]:
            raise ValueError(f"visual_embed has {visual.shape[0]} rows but text_embed has {text.shape[0]}")
        mu, logvar = self.posterior(visual, text)
        std = torch.exp(0.5 * logvar)
        if eps is None:
            eps = _randn(tuple(std.shape), generator, std)
        pred = self.decode(mu + eps * std, text)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        mse = F.mse_loss(pred, visual)
        loss = beta * kl + mse
        return loss, {"loss": float(loss.detach()), "kl": float(kl.detach()), "mse": float(mse.detach())}


def _dims_from_state(state: dict[str, torch.Tensor], source: str) -> tuple[int, int, int]:
    try:
        hidden, two_d = state["encoder.0.weight"].shape
        input_dim = state["decoder.6.weight"].shape[0]
        latent = state["encoder.6.weight"].shape[0] // 2
    except (KeyError, ValueError, AttributeError) as e:
        raise KeyError(f"{source}: not a TranslatorVAE state_dict (need encoder.0/6 and decoder.6 weights): {e}")
    if two_d != 2 * input_dim:
        raise ValueError(f"{source}: encoder input {two_d} != 2 * decoder output {input_dim}; not a TranslatorVAE")
    return int(input_dim), int(hidden), int(latent)


def load_prior(path: str | Path, device: str | torch.device = "cpu") -> TranslatorVAE:
    """Load a prior state_dict (STEVE-1's `steve1_prior.pt` or ours) strictly; dims from the shapes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prior weights {path} not found (STEVE-1's is data/weights/steve1/steve1_prior.pt)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    prior = TranslatorVAE(*_dims_from_state(state, str(path)))
    expected = prior.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise KeyError(f"{path}: keys do not match TranslatorVAE: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f"{path}: key {k} has shape {tuple(v.shape)} but TranslatorVAE"
                             f"({prior.input_dim}, {prior.hidden_dim}, {prior.latent_dim}) expects {tuple(expected[k].shape)}")
    prior.load_state_dict(state, strict=True)
    return prior.to(device).eval()


def save_prior(prior: TranslatorVAE, path: str | Path) -> Path:
    """`torch.save` of the plain state_dict (the original's format; loads in STEVE-1's load_vae_model)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in prior.state_dict().items()}, path)
    return path
