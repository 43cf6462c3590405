"""steve1_ray: distributed trainer and rollout service for STEVE-1 on Ray.

Public API (see README): `load_policy`, `load_mineclip`, `load_prior`, `Steve1Agent` (acting in this process),
`steve1_ray.actions`, `steve1_ray.data.load_contractor_episode`, `steve1_ray.client` (the HTTP API).

Importing the package stays light (no torch, cv2 or Ray): each name loads its module when it is first used.
"""
from __future__ import annotations

import os

# cv2 reads its decoder's pixel cap once, when it is loaded: set it before any module of ours imports cv2. The
# served API checks image sizes from their headers first (serving/inputs.py); this is the backstop. 2**25 pixels
# (a 100 MB BGR image) is far above any frame this package decodes.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**25))

__version__ = "0.1.0"
__all__ = ["Steve1Agent", "load_mineclip", "load_policy", "load_prior"]


def __getattr__(name):  # lazy: `from steve1_ray import Steve1Agent` loads torch, `import steve1_ray` does not
    if name == "Steve1Agent":
        from steve1_ray.agent import Steve1Agent

        return Steve1Agent
    raise AttributeError(f"module 'steve1_ray' has no attribute {name!r}")


def load_policy(model_path, weights_path=None, **kwargs):
    """Build the STEVE-1 policy from an original `.model` file (or a preset name) and load weights."""
    from steve1_ray.models.formats import load_policy as _load

    return _load(model_path, weights_path, **kwargs)


def load_mineclip(path=None, **kwargs):
    """Build MineCLIP 'attn' and strictly load `attn.pth` (or one of our MineCLIP-layout checkpoints)."""
    from steve1_ray.models.mineclip import load_mineclip as _load

    return _load(path, **kwargs)


def load_prior(path, **kwargs):
    """Build the CVAE prior and load `steve1_prior.pt` (or one of ours)."""
    from steve1_ray.models.prior import load_prior as _load

    return _load(path, **kwargs)
