"""MineCLIP 'attn' (video-text CLIP for Minecraft): frames and prompts -> goal embeddings.

Our own implementation with MineCLIP's module and parameter names, so the released `attn.pth`
loads strictly (`{"state_dict": {"model.<key>": tensor}}`, 788 keys including the aliases
`image_encoder.* == clip_model.vision_model.*` and `reward_head.clip_model.* == clip_model.*`).

    frames (B, L=16, 160, 256, 3) uint8 RGB
      -> per frame: /255, MineCLIP mean/std -> ViT-B/16 (QuickGELU) -> (B, L, 512)   encode_frames
      -> temporal encoder: + pos_emb * 512^-0.5, 2 pre-norm blocks (8 heads, GLU-SiLU FF),
         final LayerNorm, mean over time -> (B, 512)                                     pool_features
    prompts -> CLIP BPE (B, 77) -> text GPT (causal) -> EOT token -> (B, 512)            encode_text

`encode_video == pool_features(encode_frames(...))`, so a dataset pipeline can cache per-frame
features and slide only the cheap temporal pooling over them (each frame then goes through the
ViT once instead of 16 times). Neither path applies the reward head's video adapter or an L2
normalisation (STEVE-1 uses the raw embeddings); `score()` is the reward head for completeness.

The temporal encoder reproduces x-transformers 0.27.1
`ContinuousTransformerWrapper(max_seq_len=32, attn_layers=Encoder(dim=512, depth=2, heads=8,
ff_glu=True, ff_swish=True))`, which newer x-transformers releases no longer match.

The same class with another `MineCLIPConfig` (e.g. `debug`, or a 768-d output) is the generic
"embedder": `.embed_dim`, `.encode_video`, `.encode_frames`, `.pool_features`, `.encode_text`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from steve1_ray.models.tokenizer import CONTEXT_LENGTH, VOCAB_SIZE, tokenize

ATTN_MD5 = "b5ece9198337cfd117a3bfbd921e56da"
"""md5 of the released `attn.pth` (checked by STEVE-1 at load)."""
MC_IMAGE_MEAN = (0.3331, 0.3245, 0.3051)
MC_IMAGE_STD = (0.2439, 0.2493, 0.2873)
N_STATE_DICT_KEYS_ATTN = 788


@dataclass
class MineCLIPConfig:
    """Architecture of a MineCLIP-style embedder. Presets: `attn` (the released model), `debug`."""

    embed_dim: int = 512
    """Output size D of video and text embeddings (and width of the temporal encoder)."""
    resolution: tuple[int, int] = (160, 256)
    """Input frame (height, width); frames are not resized inside the model."""
    crop: Optional[tuple[int, int, int, int]] = None
    """(top, left, height, width) of each input frame that the ViT sees; None = the whole frame (MineCLIP).
    A world embedder can look at the player's neighbourhood at full resolution instead of the whole scene
    at a coarse one (the `world` preset of steve1_ray.train.embedder); the input stays `resolution`."""
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    context_length: int = CONTEXT_LENGTH
    vocab_size: int = VOCAB_SIZE
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    temporal_depth: int = 2
    temporal_heads: int = 8
    temporal_dim_head: int = 64
    """x-transformers' default head size (inner attention width = heads * dim_head)."""
    temporal_max_seq_len: int = 32
    video_adapter_layers: int = 2
    """Reward-head video adapter MLP depth ('v0-2.t0': 0 image, 2 video, 0 text adapter layers)."""
    window: int = 16
    """Frames per video embedding (STEVE-1 embeds every 16-frame window)."""
    temporal_delta: bool = False
    """The temporal encoder also sees the change of the per-frame features from one frame to the next: its
    input is the L features followed by the L-1 differences f[k] - f[k-1] (2L-1 tokens, positions L.. of the
    same positional table; no new weights, the attn.pth layout is unchanged). What a short clip *did* (an item
    count went up, a table appeared, a cow vanished) is in what changed between its frames, which a mean over
    frames hides: on crafter a linear probe of a clip's last-minus-first frame names its goal far better than
    one of its last frame (benchmarks/results/embedder.md). Off for MineCLIP as released."""
    goal_whiten: bool = False
    """Goals (`encode_video`, and the dataset job's window embeddings through `to_goal`) are the pooled video
    embedding centred and whitened: `(v - goal_mean) @ goal_matrix.T`, two buffers fitted on a dataset's
    embeddings by `steve1 whiten-embedder` (`fit_goal_whitening`). The pooled embeddings of a small world
    embedder put over half their variance in one direction and the goals' differences in directions a
    hundred times weaker, so a policy's linear goal layer barely tells a wood clip from a sapling clip (cosine
    0.74; 0.36 whitened). Text embeddings, `pool_features` (what the embedder trains on) and `score` are
    unchanged. Off for MineCLIP as released."""

    def __post_init__(self):
        self.resolution = tuple(int(r) for r in self.resolution)
        if self.crop is not None:
            self.crop = tuple(int(v) for v in self.crop)

        def bad(name, why):
            raise ValueError(f"MineCLIPConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("embed_dim", "patch_size", "vision_width", "vision_layers", "vision_heads",
                     "context_length", "vocab_size", "text_width", "text_layers", "text_heads",
                     "temporal_depth", "temporal_heads", "temporal_dim_head", "temporal_max_seq_len", "window"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                bad(name, "must be a positive integer")
        if len(self.resolution) != 2 or any(r % self.patch_size for r in self.resolution):
            bad("resolution", f"must be (height, width), both multiples of patch_size={self.patch_size}")
        if self.crop is not None:
            if len(self.crop) != 4 or min(self.crop) < 0 or self.crop[2] <= 0 or self.crop[3] <= 0:
                bad("crop", "must be (top, left, height, width) with positive height and width")
            t, l, h, w = self.crop
            if t + h > self.resolution[0] or l + w > self.resolution[1]:
                bad("crop", f"must lie inside the {self.resolution[0]}x{self.resolution[1]} frame")
            if h % self.patch_size or w % self.patch_size:
                bad("crop", f"height and width must be multiples of patch_size={self.patch_size}")
        if self.vision_width % self.vision_heads:
            bad("vision_heads", f"must divide vision_width={self.vision_width}")
        if self.text_width % self.text_heads:
            bad("text_heads", f"must divide text_width={self.text_width}")
        if self.window > self.temporal_max_seq_len:
            bad("window", f"must be <= temporal_max_seq_len={self.temporal_max_seq_len}")
        if not isinstance(self.temporal_delta, bool):
            bad("temporal_delta", "must be true or false")
        if not isinstance(self.goal_whiten, bool):
            bad("goal_whiten", "must be true or false")
        if self.temporal_delta and 2 * self.window - 1 > self.temporal_max_seq_len:
            bad("temporal_delta", f"needs 2*window-1={2 * self.window - 1} <= temporal_max_seq_len="
                                  f"{self.temporal_max_seq_len} positions")
        if not isinstance(self.video_adapter_layers, int) or self.video_adapter_layers < 0:
            bad("video_adapter_layers", "must be an integer >= 0")

    @classmethod
    def preset(cls, name: str, **overrides) -> "MineCLIPConfig":
        """`attn`: MineCLIP as released (158.5M parameters). `debug`: ~7M parameters (mostly the 512-d temporal encoder and token table) for CPU tests
        (same input/output shapes: 160x256 frames, 77 tokens, D=512)."""
        presets = {
            "attn": {},
            "debug": dict(vision_width=64, vision_layers=2, vision_heads=2, text_width=64, text_layers=2,
                          text_heads=2, temporal_depth=1, temporal_heads=2),
        }
        if name not in presets:
            raise ValueError(f"unknown MineCLIP preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["resolution"] = list(self.resolution)
        d["crop"] = list(self.crop) if self.crop is not None else None
        return d

    @property
    def vision_size(self) -> tuple[int, int]:
        """(height, width) of what the ViT sees: the crop, or the whole frame."""
        return (self.crop[2], self.crop[3]) if self.crop is not None else self.resolution


# ---------------------------------------------------------------------------------------------
# CLIP towers (names as MineCLIP's clip.py).

class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names (batch-first)."""

    def __init__(self, width: int, heads: int, causal: bool = False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, S, width)
        n, s, w = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(n, s, 3, self.heads, -1).unbind(2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             is_causal=self.causal)
        return self.out_proj(out.transpose(1, 2).reshape(n, s, w))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, causal: bool = False):
        super().__init__()
        self.attn = SelfAttention(width, heads, causal)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=QuickGELU(),
                                             c_proj=nn.Linear(4 * width, width)))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class VisionTransformer(nn.Module):
    """ViT: (N, 3, H, W) normalised float -> (N, embed_dim) from the CLS token."""

    def __init__(self, cfg: MineCLIPConfig):
        super().__init__()
        h_in, w_in = cfg.vision_size
        w, grid = cfg.vision_width, (h_in // cfg.patch_size) * (w_in // cfg.patch_size)
        scale = w ** -0.5
        self.conv1 = nn.Conv2d(3, w, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.cls_token = nn.Parameter(scale * torch.randn(w))
        self.pos_embed = nn.Parameter(scale * torch.randn(grid + 1, w))
        self.ln_pre = nn.LayerNorm(w)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(w, cfg.vision_heads) for _ in range(cfg.vision_layers))
        self.ln_post = nn.LayerNorm(w)
        self.projection = nn.Parameter(scale * torch.randn(w, cfg.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # (N, patches, width), patches row-major
        x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        x = self.ln_pre(x + self.pos_embed.to(x.dtype))
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x[:, 0]) @ self.projection


class GPT(nn.Module):
    """Causal text transformer: (B, 77) token ids -> (B, embed_dim) at the EOT (max id) position."""

    def __init__(self, cfg: MineCLIPConfig):
        super().__init__()
        w, layers = cfg.text_width, cfg.text_layers
        self.context_length = cfg.context_length
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        self.pos_embed = nn.Parameter(torch.empty(cfg.context_length, w))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(w, cfg.text_heads, causal=True) for _ in range(layers))
        self.ln_final = nn.LayerNorm(w)
        self.projection = nn.Parameter(torch.empty(w, cfg.embed_dim))
        # CLIP's init.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        proj_std, attn_std, fc_std = w ** -0.5 * (2 * layers) ** -0.5, w ** -0.5, (2 * w) ** -0.5
        for block in self.blocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.projection, std=w ** -0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, 77) int64
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"text tokens must be (B, {self.context_length}) int64, got {tuple(tokens.shape)}; "
                             "use MineCLIP.tokenize(texts)")
        x = self.token_embedding(tokens) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.projection


class CLIP(nn.Module):
    def __init__(self, cfg: MineCLIPConfig):
        super().__init__()
        self.vision_model = VisionTransformer(cfg)
        self.text_model = GPT(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


# ---------------------------------------------------------------------------------------------
# Temporal encoder: x-transformers 0.27.1 ContinuousTransformerWrapper + Encoder, same key names.

class _AbsolutePositionalEmbedding(nn.Module):
    def __init__(self, dim: int, max_seq_len: int):
        super().__init__()
        self.scale = dim ** -0.5
        self.emb = nn.Embedding(max_seq_len, dim)

    def forward(self, length: int) -> torch.Tensor:
        return self.emb.weight[:length] * self.scale


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_k = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_v = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, dim), no mask
        b, n, _ = x.shape
        q, k, v = (f(x).view(b, n, self.heads, -1).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale dim_head^-0.5
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class _GLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.silu(gate)


class _FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(_GLU(dim, dim * mult), nn.Identity(), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Encoder(nn.Module):
    """Alternating pre-norm attention / feed-forward layers: `layers.{i}` = [[LayerNorm], block]."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            for block in (_Attention(dim, heads, dim_head), _FeedForward(dim)):
                self.layers.append(nn.ModuleList([nn.ModuleList([nn.LayerNorm(dim)]), block]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for (pre_norm,), block in self.layers:
            x = x + block(pre_norm(x))
        return x


class _ContinuousTransformer(nn.Module):
    def __init__(self, cfg: MineCLIPConfig):
        super().__init__()
        dim = cfg.embed_dim
        self.max_seq_len = cfg.temporal_max_seq_len
        self.pos_emb = _AbsolutePositionalEmbedding(dim, cfg.temporal_max_seq_len)
        self.attn_layers = _Encoder(dim, cfg.temporal_depth, cfg.temporal_heads, cfg.temporal_dim_head)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_emb(x.shape[1]).to(x.dtype)
        return self.norm(self.attn_layers(x))


class TemporalTransformer(nn.Module):
    def __init__(self, cfg: MineCLIPConfig):
        super().__init__()
        self.model = _ContinuousTransformer(cfg)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, D)
        return self.model(feats).mean(dim=1)


class TemporalPooling(nn.Module):
    """MineCLIP's temporal encoder with no MLP before pooling (`attn.d2.nh8.glusw`)."""

    def __init__(self, cfg: MineCLIPConfig):
        super().__init__()
        self.attn = TemporalTransformer(cfg)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.attn(feats)


# ---------------------------------------------------------------------------------------------
# Reward head (not used for STEVE-1 embeddings).

def _adapter(dim: int, layers: int) -> nn.Module:
    """MineCLIP's build_mlp(dim, hidden=dim, out=dim, num_layers): Linear, [Identity, ReLU, Linear]*."""
    if layers == 0:
        return nn.Identity()
    mods: list[nn.Module] = [nn.Linear(dim, dim)]
    for _ in range(layers - 1):
        mods += [nn.Identity(), nn.ReLU(), nn.Linear(dim, dim)]
    for m in mods:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*mods)


class CLIPScoreHead(nn.Module):
    def __init__(self, clip_model: CLIP, cfg: MineCLIPConfig):
        super().__init__()
        self.clip_model = clip_model
        self.video_adapter = _adapter(cfg.embed_dim, cfg.video_adapter_layers)
        self.video_residual_weight = nn.Parameter(torch.tensor(4.0)) if cfg.video_adapter_layers else None

    def adapt_video(self, video_embed: torch.Tensor) -> torch.Tensor:
        if self.video_residual_weight is None:
            return self.video_adapter(video_embed)
        res = torch.sigmoid(self.video_residual_weight)
        return res * video_embed + (1.0 - res) * self.video_adapter(video_embed)

    def forward(self, video_embed: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
        """Scaled cosine-similarity logits (B_video, B_text)."""
        v = self.adapt_video(video_embed)
        v = v / v.norm(dim=1, keepdim=True)
        t = text_embed / text_embed.norm(dim=1, keepdim=True)
        return self.clip_model.logit_scale.exp() * v @ t.t()


# ---------------------------------------------------------------------------------------------

def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


class MineCLIP(nn.Module):
    """MineCLIP with the released module tree (see the module docstring); also the embedder interface."""

    def __init__(self, cfg: MineCLIPConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else MineCLIPConfig.preset("attn")
        clip_model = CLIP(cfg)
        # Registration order (and the aliases) as the original, so state_dict() has the same 788 keys.
        self.image_encoder = clip_model.vision_model
        self.temporal_encoder = TemporalPooling(cfg)
        self.reward_head = CLIPScoreHead(clip_model, cfg)
        self.clip_model = clip_model
        self.register_buffer("pixel_mean", torch.tensor(MC_IMAGE_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(MC_IMAGE_STD).view(1, 3, 1, 1) * 255.0, persistent=False)
        if cfg.goal_whiten:  # saved with the weights (set by `set_goal_whitening`); identity until then
            self.register_buffer("goal_mean", torch.zeros(cfg.embed_dim))
            self.register_buffer("goal_matrix", torch.eye(cfg.embed_dim))

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def window(self) -> int:
        return self.cfg.window

    @property
    def device(self) -> torch.device:
        return self.clip_model.logit_scale.device

    # -- differentiable pieces (training a MineCLIP-architecture embedder uses these) ----------

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) or (N, 3, H, W) RGB 0..255 (uint8 or float) -> (N, 3, H, W) normalised float."""
        h, w = self.cfg.resolution
        if frames.ndim != 4 or (tuple(frames.shape[1:]) not in ((h, w, 3), (3, h, w))):
            raise ValueError(f"frames must be (N, {h}, {w}, 3) RGB (or channels-first), got {tuple(frames.shape)}; "
                             f"resize with cv2.resize(frame, ({w}, {h}), interpolation=cv2.INTER_LINEAR)")
        x = frames.permute(0, 3, 1, 2) if frames.shape[-1] == 3 else frames
        if self.cfg.crop is not None:  # crop first: only the region travels to the device
            t, l, ch, cw = self.cfg.crop
            x = x[:, :, t:t + ch, l:l + cw]
        x = x.to(self.device).float()
        # (x / 255 - mean) / std, written with the 255 folded into mean and std.
        x = (x - self.pixel_mean) / self.pixel_std
        return x.to(self.clip_model.logit_scale.dtype)

    def forward_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) frames -> (N, D) per-frame ViT features (with grad if enabled)."""
        return self.image_encoder(self.preprocess(frames))

    def pool_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Temporal pooling of per-frame features: (B, L, D) -> (B, D)."""
        feats = _as_tensor(feats)
        longest = (self.cfg.temporal_max_seq_len + 1) // 2 if self.cfg.temporal_delta else self.cfg.temporal_max_seq_len
        if feats.ndim != 3 or feats.shape[-1] != self.embed_dim or feats.shape[1] > longest:
            raise ValueError(f"features must be (B, L<={longest}, {self.embed_dim}), got {tuple(feats.shape)}")
        feats = feats.to(self.device, self.clip_model.logit_scale.dtype)
        if self.cfg.temporal_delta:
            feats = torch.cat([feats, feats[:, 1:] - feats[:, :-1]], dim=1)  # (B, 2L-1, D)
        return self.temporal_encoder(feats)

    def to_goal(self, video_embed: torch.Tensor) -> torch.Tensor:
        """Pooled video embeddings (B, D) -> goals: whitened with `goal_whiten`, else unchanged."""
        if not self.cfg.goal_whiten:
            return video_embed
        # in fp32 also under autocast (the dataset job's fp16/bf16): whitening scales weak directions up, and
        # with them the rounding of a half-precision product
        with torch.autocast(device_type=video_embed.device.type, enabled=False):
            return (video_embed.float() - self.goal_mean.float()) @ self.goal_matrix.float().T

    def set_goal_whitening(self, mean, matrix) -> "MineCLIP":
        """Store a fitted whitening (`fit_goal_whitening`); the config must have `goal_whiten`."""
        if not self.cfg.goal_whiten:
            raise ValueError("set_goal_whitening needs a MineCLIPConfig with goal_whiten=True")
        mean, matrix = _as_tensor(mean).float(), _as_tensor(matrix).float()
        d = self.cfg.embed_dim
        if tuple(mean.shape) != (d,) or tuple(matrix.shape) != (d, d) or not (
                torch.isfinite(mean).all() and torch.isfinite(matrix).all()):
            raise ValueError(f"whitening must be a finite mean ({d},) and matrix ({d}, {d}); got "
                             f"{tuple(mean.shape)} and {tuple(matrix.shape)}")
        with torch.no_grad():
            self.goal_mean.copy_(mean)
            self.goal_matrix.copy_(matrix)
        return self

    def forward_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 77) int64 tokens -> (B, D) text embeddings (with grad if enabled)."""
        return self.clip_model.text_model(_as_tensor(tokens).to(self.device))

    def score(self, video_embed: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
        """Reward head: video adapter, L2-normalise both, logits = exp(logit_scale) * v . t  (Bv, Bt)."""
        return self.reward_head(video_embed, text_embed)

    # -- inference helpers (no grad) ------------------------------------------------------------

    @torch.no_grad()
    def encode_frames(self, frames, batch_size: int = 64) -> torch.Tensor:
        """(N, 160, 256, 3) uint8 RGB (NumPy or torch) -> (N, D) float32 per-frame features."""
        frames = _as_tensor(frames)
        if frames.ndim != 4:
            raise ValueError(f"encode_frames expects (N, H, W, 3) frames, got {tuple(frames.shape)}; "
                             "use encode_video for (B, L, H, W, 3)")
        if frames.shape[0] == 0:
            return torch.zeros(0, self.embed_dim, device=self.device)
        return torch.cat([self.forward_frames(frames[i:i + batch_size]).float()
                          for i in range(0, frames.shape[0], batch_size)])

    @torch.no_grad()
    def encode_video(self, frames, batch_size: int = 64) -> torch.Tensor:
        """(B, L, 160, 256, 3) uint8 RGB -> (B, D) float32 goals (= to_goal(pool_features(encode_frames)))."""
        frames = _as_tensor(frames)
        if frames.ndim != 5:
            raise ValueError(f"encode_video expects (B, L, H, W, 3) frames, got {tuple(frames.shape)}")
        b, l = frames.shape[:2]
        feats = self.encode_frames(frames.reshape(b * l, *frames.shape[2:]), batch_size)
        return self.to_goal(self.pool_features(feats.view(b, l, -1))).float()

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """(B, 77) int64 CLIP tokens (on CPU)."""
        return tokenize(texts, self.cfg.context_length)

    @torch.no_grad()
    def encode_text(self, texts) -> torch.Tensor:
        """list[str] (or a (B, 77) int64 token tensor) -> (B, D) float32 text embeddings."""
        tokens = self.tokenize(texts) if isinstance(texts, (str, list, tuple)) else _as_tensor(texts)
        if tokens.dtype != torch.int64:
            raise TypeError(f"encode_text expects strings or int64 tokens, got dtype {tokens.dtype}")
        return self.forward_text(tokens).float()


# ---------------------------------------------------------------------------------------------
# Files: attn.pth layout {"state_dict": {"model.<key>": tensor}} (+ our "mineclip_config").

def file_md5(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _strict_load(model: MineCLIP, state: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise KeyError(f"{source}: state_dict does not match MineCLIP(cfg): {len(missing)} missing "
                       f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
                       "wrong cfg preset, or not a MineCLIP checkpoint?")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f"{source}: key {k} has shape {tuple(v.shape)} but the model expects "
                             f"{tuple(expected[k].shape)}: wrong cfg (e.g. preset 'attn' vs 'debug', embed_dim)?")
    model.load_state_dict(state, strict=True)


def load_mineclip(path: str | Path | None = None, cfg: MineCLIPConfig | str | None = None, *,
                  md5: str | None = None, device: str | torch.device = "cpu", seed: int | None = None) -> MineCLIP:
    """Build a MineCLIP and load `path` strictly (eval mode).

    - `path=None`: random init of `cfg` (default `attn`), seeded with `seed` if given.
    - `cfg`: a config or preset name; default: the config stored in the file (ours) or `attn`.
    - `md5`: expected checksum, or "official" for the released attn.pth (`ATTN_MD5`).
    """
    if isinstance(cfg, str):
        cfg = MineCLIPConfig.preset(cfg)
    if path is None:
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = MineCLIP(cfg)
        else:
            model = MineCLIP(cfg)
        return model.to(device).eval()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MineCLIP checkpoint {path} not found (STEVE-1's is data/weights/mineclip/attn.pth)")
    verified = False
    if md5 is not None:
        want = ATTN_MD5 if md5 == "official" else md5
        got = file_md5(path)
        if got != want:
            raise ValueError(f"{path}: md5 {got} != expected {want}; the download is broken or a different file")
        verified = True
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Lightning-era checkpoints may pickle more than tensors. Only a checksum-verified file is
        # unpickled in full; anything else is refused with the way out.
        if not verified:
            raise ValueError(f"{path}: holds objects other than tensors ({str(e).splitlines()[0]}); if it is the "
                             "official attn.pth, load it with md5='official' (verified files are unpickled in full)")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path}: expected a dict with a 'state_dict' entry (MineCLIP attn.pth layout)")
    if cfg is None:
        stored = ckpt.get("mineclip_config")
        cfg = MineCLIPConfig(**stored) if isinstance(stored, dict) else MineCLIPConfig.preset("attn")
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    if not state:
        raise ValueError(f"{path}: no 'model.*' keys in state_dict; not a MineCLIP checkpoint")
    model = MineCLIP(cfg)
    _strict_load(model, state, str(path))
    return model.to(device).eval()


def fit_goal_whitening(embeds: np.ndarray, rel_eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """ZCA whitening of (N, D) pooled embeddings: (mean (D,), matrix (D, D)) with `(v - mean) @ matrix.T` of
    identity covariance, except that eigenvalues below `rel_eps` x the largest are floored there (directions the
    data hardly uses are not blown up into noise)."""
    x = np.asarray(embeds, np.float64)
    if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
        raise ValueError(f"need (N >= 2, D) finite embeddings to fit a whitening, got {x.shape}")
    if not rel_eps > 0:
        raise ValueError(f"rel_eps={rel_eps} must be > 0")
    mean = x.mean(0)
    w, v = np.linalg.eigh(np.cov((x - mean).T))
    w = np.maximum(w, rel_eps * max(float(w.max()), 1e-12))
    return mean.astype(np.float32), (v @ np.diag(w ** -0.5) @ v.T).astype(np.float32)


def save_mineclip(model: MineCLIP, path: str | Path) -> Path:
    """Write `{"state_dict": {"model.<key>": tensor}, "mineclip_config": {...}}` (loads in the original, except a
    `goal_whiten` embedder: its `goal_mean` / `goal_matrix` are keys the original does not have)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}  # aliases share storage
    torch.save({"state_dict": state, "mineclip_config": model.cfg.to_dict()}, path)
    return path
