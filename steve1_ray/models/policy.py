"""The STEVE-1 / VPT policy: ImpalaCNN + goal embedding + memory transformer (or LSTM) + action/value heads.

A clean reimplementation of VPT's `MinecraftAgentPolicy` with STEVE-1's goal input
(`steve1/embed_conditioned_policy.py`). The numbers and the `state_dict` (keys, shapes, order) are the
original's, so released `.weights` files load strictly and files we save load in the original code
(reading and writing those files is `formats.py`'s job; this module is model code only).
Facts: `shared/reference/vpt-mineclip-facts.md` section A.

    policy = build_policy("debug")                        # or formats.load_policy("2x.model", "steve1.weights")
    state = policy.initial_state(B)
    log_probs, state = policy(img, goal_embed, first, state)   # img (B, T, 128, 128, 3) uint8
    action = sample(log_probs)                            # {"buttons": (B, T), "camera": (B, T)}

Recurrent state is a flat list of tensors, each with batch on dim 0, so sessions can be indexed,
stacked and concatenated (`select_state`, `cat_states`, `detach_state`):
- transformer: per block `mask` bool (B, maxlen), `K`, `V` (B, maxlen, hidsize), with
  maxlen = attention_memory_size - timesteps. `mask` marks cache slots of the current episode
  (all False initially, like the original's `state_mask=None`).
- LSTM variants: per block `h`, `c` (B, hidsize) (zeros initially, like the original's `None`).

`first` semantics are the original's: **only `first[:, 0]` is read.** It hides all earlier memory
for that row; a `first=True` later in a chunk is ignored, so chunks must start at episode boundaries.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

N_BUTTONS = 8641
N_CAMERA = 121
RECURRENCE_TYPES = ("transformer", "multi_layer_lstm", "multi_layer_bilstm", "none")
CPU_FRAME_CHUNK = 8
"""On CPU the ImpalaCNN runs this many frames at a time (`ImpalaCNN.cpu_chunk`; 0 = all at once). Its activations
at 128x128 outgrow the caches as the batch grows. 2x on 2 cores (benchmarks/RESULTS.md, session 19): act_batch at 32
sessions 105 against 127 ms per session, 116 against 121 at 16; a training step (B 2 x trunc_t 16, 32 frames) 6.59
against 8.37 s in bf16 autocast and faster in every round in fp32 too. Every frame's features are the same either
way up to float rounding (per-frame convolutions and norms; oneDNN picks its algorithm by batch size), and the
weight gradients are summed over the chunks."""
State = list  # list[torch.Tensor], each (B, ...)


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------
@dataclass
class PolicyConfig:
    """Policy hyperparameters. Field names are the `.model` pickle's `net.args` kwargs (plus `temperature`
    from `pi_head_opts` and `embed_dim` = STEVE-1's `mineclip_embed_dim`)."""

    hidsize: int = 2048
    """Width of the recurrent stream (2x: 2048)."""
    impala_width: int = 8
    """Multiplier on `impala_chans`."""
    impala_chans: list[int] = field(default_factory=lambda: [16, 32, 32])
    """Channels of the three ImpalaCNN down-stacks before `impala_width`."""
    impala_kwargs: dict[str, Any] = field(default_factory=lambda: {"post_pool_groups": 1})
    """Only `post_pool_groups` (GroupNorm groups after each max-pool, or None) is used."""
    init_norm_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"batch_norm": False, "group_norm_groups": 1})
    """Norm inside the CNN layers: GroupNorm(`group_norm_groups`) or none; batch_norm is not supported."""
    attention_heads: int = 16
    attention_mask_style: str = "clipped_causal"
    """`clipped_causal` (each frame sees itself + maxlen-1 earlier frames) or `none` (sees everything)."""
    attention_memory_size: int = 256
    """Memory + chunk length; the KV cache holds `attention_memory_size - timesteps` frames."""
    timesteps: int = 128
    n_recurrence_layers: int = 4
    pointwise_ratio: int = 4
    pointwise_use_activation: bool = False
    recurrence_is_residual: bool = True
    recurrence_type: str = "transformer"
    """transformer | multi_layer_lstm | multi_layer_bilstm | none (identity; the original crashes on it)."""
    use_pointwise_layer: bool = True
    use_pre_lstm_ln: bool = False
    img_shape: list[int] = field(default_factory=lambda: [128, 128, 3])
    fovea_shape: Optional[list[int]] = None
    """Ours, not VPT's: [height, width] of a crop at the image centre that a second, small ImpalaCNN sees at the
    input's own resolution; its features are added to the whole image's (`net.img_process.fovea.*`). The centre is
    where the player acts: the crosshair in Minecraft, the player's tile and the four it can face in the embedded
    world. None (every released VPT/STEVE-1 model): no fovea, and the `.model` file has neither fovea key."""
    fovea_chans: list[int] = field(default_factory=lambda: [16, 16])
    """Channels of the fovea's down-stacks (each halves the crop); read only with `fovea_shape`."""
    goal_film: bool = False
    """Ours, not STEVE-1's: the goal embedding also scales and shifts every channel of each image CNN's last
    down-stack (FiLM; `net.img_process.cnn.film.*`, and `net.img_process.fovea.cnn.film.*` with a fovea; zero at
    initialisation, so training starts from the plain addition), so the goal can choose which feature maps (a tree
    detector's, say) reach the dense layer with their positions, not only shift the features after it. False
    (every released model): no such layers, and the `.model` file has no `goal_film` key. The FiLM comes after the last convolution, so a guided step still
    runs the down-stacks once per frame and only the FiLM and dense layers per row (`rows=`;
    `steve1_ray.agent._shared_frame_forward`)."""
    temperature: float = 2.0
    """Action logits are divided by this before log-softmax (training too, as the original)."""
    embed_dim: int = 512
    """Goal embedding size (MineCLIP: 512)."""
    activation_checkpointing: bool = False
    """Recompute each recurrent block in backward (saves memory when training); not a `.model` kwarg."""

    # Original kwargs accepted only at their 2x values (anything else changes the architecture).
    diff_mlp_embedding: bool = False
    first_conv_norm: bool = False
    single_output: bool = False
    scale_input_img: bool = True
    img_statistics: Optional[str] = None

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"PolicyConfig.{name}={getattr(self, name)!r}: {why}")

        self.impala_chans = [int(c) for c in self.impala_chans]
        self.img_shape = [int(s) for s in self.img_shape]
        self.temperature = float(self.temperature)
        for name in ("hidsize", "impala_width", "attention_heads", "pointwise_ratio", "embed_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                bad(name, "must be a positive integer")
        if len(self.impala_chans) == 0 or min(self.impala_chans) <= 0:
            bad("impala_chans", "must be a non-empty list of positive channel counts, e.g. [16, 32, 32]")
        if len(self.img_shape) != 3 or self.img_shape[2] != 3 or min(self.img_shape) <= 0:
            bad("img_shape", "must be [height, width, 3], e.g. [128, 128, 3]")
        def ints(name):
            try:
                return [int(v) for v in getattr(self, name)]
            except (TypeError, ValueError):
                bad(name, "must be a list of integers")

        self.fovea_chans = ints("fovea_chans")
        if not isinstance(self.goal_film, bool):
            bad("goal_film", "must be true or false")
        if self.fovea_shape is not None:
            self.fovea_shape = ints("fovea_shape")
            if (len(self.fovea_shape) != 2 or min(self.fovea_shape) < 4
                    or self.fovea_shape[0] > self.img_shape[0] or self.fovea_shape[1] > self.img_shape[1]):
                bad("fovea_shape", f"must be [height, width], each at least 4 and within img_shape {self.img_shape[:2]}")
            if len(self.fovea_chans) == 0 or min(self.fovea_chans) <= 0:
                bad("fovea_chans", "must be a non-empty list of positive channel counts, e.g. [16, 16]")
        if self.recurrence_type not in RECURRENCE_TYPES:
            bad("recurrence_type", f"must be one of {list(RECURRENCE_TYPES)}")
        if not isinstance(self.n_recurrence_layers, int) or self.n_recurrence_layers < 1:
            bad("n_recurrence_layers", "must be an integer >= 1")
        if self.attention_mask_style not in ("clipped_causal", "none"):
            bad("attention_mask_style", "must be 'clipped_causal' or 'none'")
        if self.recurrence_type == "transformer":
            if self.hidsize % self.attention_heads:
                bad("attention_heads", f"must divide hidsize={self.hidsize}")
            if not isinstance(self.timesteps, int) or self.timesteps < 1:
                bad("timesteps", "must be a positive integer for the transformer")
            if not isinstance(self.attention_memory_size, int) or self.attention_memory_size <= self.timesteps:
                bad("attention_memory_size", f"must be larger than timesteps={self.timesteps} "
                    "(the KV cache holds attention_memory_size - timesteps frames)")
        if not self.temperature > 0:
            bad("temperature", "must be > 0")
        unknown = set(self.impala_kwargs) - {"post_pool_groups"}
        if unknown:
            bad("impala_kwargs", f"unsupported keys {sorted(unknown)}; only post_pool_groups is used")
        ppg = self.impala_kwargs.get("post_pool_groups")
        if ppg is not None and (not isinstance(ppg, int) or ppg < 1):
            bad("impala_kwargs", "post_pool_groups must be a positive integer or null")
        if self.init_norm_kwargs.get("batch_norm", False):
            bad("init_norm_kwargs", "batch_norm=True is not supported (no released model uses it)")
        unknown = set(self.init_norm_kwargs) - {"batch_norm", "group_norm_groups"}
        if unknown:
            bad("init_norm_kwargs", f"unsupported keys {sorted(unknown)}; only batch_norm (false) and "
                "group_norm_groups are used by VPT models")
        ggn = self.init_norm_kwargs.get("group_norm_groups")
        if ggn is not None and (not isinstance(ggn, int) or ggn < 1):
            bad("init_norm_kwargs", "group_norm_groups must be a positive integer or null")
        for name, ok in (("diff_mlp_embedding", False), ("first_conv_norm", False), ("single_output", False),
                         ("scale_input_img", True), ("img_statistics", None)):
            if getattr(self, name) != ok:
                bad(name, f"only {ok!r} is supported (the value every released VPT/STEVE-1 model uses)")

    @property
    def maxlen(self) -> int:
        """Frames held in each block's KV cache (transformer)."""
        return self.attention_memory_size - self.timesteps

    @classmethod
    def preset(cls, name: str, **overrides) -> "PolicyConfig":
        """`1x`, `2x` (the released STEVE-1 size), `3x`, `small` (a wider CPU policy) or `debug`
        (tiny, for CPU tests)."""
        if name not in PRESETS:
            raise ValueError(f"unknown policy preset {name!r}; choose one of {sorted(PRESETS)} "
                             "or pass a .model file")
        return cls(**{**PRESETS[name], **overrides})

    def to_model_kwargs(self) -> dict[str, Any]:
        """The original `net.args` kwargs (what `.model` files hold; `mineclip_embed_dim` is STEVE-1's)."""
        d = dataclasses.asdict(self)
        for ours in ("temperature", "embed_dim", "activation_checkpointing"):
            d.pop(ours)
        if self.fovea_shape is None:  # the released layout, key for key
            d.pop("fovea_shape"), d.pop("fovea_chans")
        if not self.goal_film:
            d.pop("goal_film")
        d["mineclip_embed_dim"] = self.embed_dim
        return d


PRESETS: dict[str, dict[str, Any]] = {
    "2x": {},
    "1x": {"hidsize": 1024, "attention_heads": 8, "impala_width": 4},
    "3x": {"hidsize": 3072, "attention_heads": 24, "impala_width": 12},
    # Small enough for CPU tests and still the same code paths (clipping: maxlen 8 < chunk lengths used).
    "debug": {"hidsize": 64, "attention_heads": 4, "impala_width": 1, "impala_chans": [4, 8, 8],
              "n_recurrence_layers": 2, "attention_memory_size": 24, "timesteps": 16},
    # A wider CPU policy for the embedded world: debug's memory with VPT's channel counts (16/32/32 at width 1)
    # and twice its width; ~2.4x debug's cost per frame (prompt following: benchmarks/RESULTS.md, session 4).
    "small": {"hidsize": 128, "attention_heads": 4, "impala_width": 1, "impala_chans": [16, 32, 32],
              "n_recurrence_layers": 2, "attention_memory_size": 24, "timesteps": 16},
    # debug twice as wide (hidsize 128, ImpalaCNN 8/16/16): 2.2x debug's parameters, ~0.8x its training speed on 2
    # CPU cores (`steve1 release-world steve1_policy=wide`; as the release's STEVE-1 policy it followed no more prompts
    # than debug's width, benchmarks/RESULTS.md sessions 25-26)
    "wide": {"hidsize": 128, "attention_heads": 4, "impala_width": 1, "impala_chans": [8, 16, 16],
             "n_recurrence_layers": 2, "attention_memory_size": 24, "timesteps": 16},
    # debug with a fovea: a 48x32 crop at the centre of the 128x128 frame (the embedded world's player tile and the
    # tiles it can face, 3 rows x 4 columns) seen by two 16-channel down-stacks, features added to the frame's
    # (benchmarks/RESULTS.md, session 29: debug's encoder barely encodes the faced tile)
    "fovea": {"hidsize": 64, "attention_heads": 4, "impala_width": 1, "impala_chans": [4, 8, 8],
              "n_recurrence_layers": 2, "attention_memory_size": 24, "timesteps": 16,
              "fovea_shape": [48, 32], "fovea_chans": [16, 16]},
    # fovea whose goal also scales and shifts both CNNs' last channels (FiLM, `goal_film`; benchmarks/RESULTS.md,
    # session 37: the goal added after the CNNs' dense layers steers `do`, not where the player walks)
    "fovea_film": {"hidsize": 64, "attention_heads": 4, "impala_width": 1, "impala_chans": [4, 8, 8],
                   "n_recurrence_layers": 2, "attention_memory_size": 24, "timesteps": 16,
                   "fovea_shape": [48, 32], "fovea_chans": [16, 16], "goal_film": True},
}


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------
def _fan_in_(layer: nn.Module, scale: float) -> None:
    """Rescale each output row of a fresh Linear/Conv to L2 norm `scale`; zero the bias (VPT's init)."""
    if layer.weight.is_meta:  # shapes only (e.g. counting parameters): nothing to initialise
        return
    with torch.no_grad():
        w = layer.weight
        w.mul_(scale / torch.linalg.vector_norm(w, dim=tuple(range(1, w.ndim)), keepdim=True))
        if layer.bias is not None:
            layer.bias.zero_()


class NormLayer(nn.Module):
    """VPT's FanInInitReLULayer: optional norm on the *input*, then Linear/Conv (bias only without a
    norm), then ReLU. Keys: `norm.*`, `layer.*`."""

    def __init__(self, cin: int, cout: int, kind: str = "linear", norm: Optional[str] = None,
                 groups: int = 1, activation: bool = True, init_scale: float = 1.0):
        super().__init__()
        if norm == "group":
            self.norm = nn.GroupNorm(groups, cin)
        elif norm == "layer":
            self.norm = nn.LayerNorm(cin)
        else:
            self.norm = None
        bias = self.norm is None
        if kind == "conv":
            self.layer = nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=bias)
        else:
            self.layer = nn.Linear(cin, cout, bias=bias)
        self.activation = activation
        _fan_in_(self.layer, init_scale)

    def forward(self, x):
        if self.norm is not None:
            x = self.norm(x)
        x = self.layer(x)
        return F.relu(x) if self.activation else x


class CnnBasicBlock(nn.Module):
    def __init__(self, chans: int, norm: Optional[str], groups: int, init_scale: float):
        super().__init__()
        s = math.sqrt(init_scale)
        self.conv0 = NormLayer(chans, chans, "conv", norm, groups, init_scale=s)
        self.conv1 = NormLayer(chans, chans, "conv", norm, groups, init_scale=s)

    def forward(self, x):
        return x + self.conv1(self.conv0(x))


class CnnDownStack(nn.Module):
    """conv3x3 → maxpool(3, 2, pad 1) → GroupNorm → 2 residual blocks."""

    def __init__(self, cin: int, cout: int, first_norm: bool, norm: Optional[str], groups: int,
                 post_pool_groups: Optional[int], init_scale: float, nblock: int = 2):
        super().__init__()
        self.firstconv = NormLayer(cin, cout, "conv", norm if first_norm else None, groups)
        self.n = nn.GroupNorm(post_pool_groups, cout) if post_pool_groups is not None else None
        self.blocks = nn.ModuleList(
            CnnBasicBlock(cout, norm, groups, init_scale / math.sqrt(nblock)) for _ in range(nblock))

    def forward(self, x):
        x = F.max_pool2d(self.firstconv(x), kernel_size=3, stride=2, padding=1)
        if self.n is not None:
            x = self.n(x)
        for block in self.blocks:
            x = block(x)
        return x


class ImpalaCNN(nn.Module):
    def __init__(self, cfg: PolicyConfig, outsize: int = 256):
        super().__init__()
        h, w, c = cfg.img_shape
        groups = cfg.init_norm_kwargs.get("group_norm_groups")
        norm = "group" if groups is not None else None
        chans = [int(cfg.impala_width * ch) for ch in cfg.impala_chans]
        self.stacks = nn.ModuleList()
        for i, cout in enumerate(chans):
            self.stacks.append(CnnDownStack(c, cout, first_norm=i > 0, norm=norm, groups=groups or 1,
                                            post_pool_groups=cfg.impala_kwargs.get("post_pool_groups"),
                                            init_scale=math.sqrt(len(chans))))
            c, h, w = cout, (h + 1) // 2, (w + 1) // 2
        dense_norm = "layer" if groups is not None else None
        self.dense = NormLayer(c * h * w, outsize, "linear", dense_norm, init_scale=1.4)
        self.film = nn.Linear(cfg.embed_dim, 2 * c) if cfg.goal_film else None
        if self.film is not None:  # identity at the start: (1 + 0) * x + 0
            nn.init.zeros_(self.film.weight), nn.init.zeros_(self.film.bias)

    cpu_chunk: int = CPU_FRAME_CHUNK
    """frames per pass on CPU (0 = all at once); see CPU_FRAME_CHUNK"""
    chunk_with_grad: bool = True
    """chunk with autograd on too (training); False: only at inference"""

    def forward(self, x, goal=None, rows=None):
        """(N, H, W, C) float [, (R, embed_dim) with goal_film] -> (R, outsize), R = N; or, with `rows` (R,) indices
        into the N frames, the down-stacks run once per frame and only the goal's FiLM and the dense layer per row
        (the agent's guided rows share a frame: the FiLM comes after every convolution)."""
        n = x.shape[0] if rows is None else rows.shape[0]
        if self.film is not None and (goal is None or goal.shape[0] != n):
            raise ValueError(f"a goal_film CNN needs a goal per row: (R, embed_dim) with R = {n}")
        chunked = (self.cpu_chunk and x.shape[0] > self.cpu_chunk and x.device.type == "cpu"
                   and (self.chunk_with_grad or not torch.is_grad_enabled()))
        if rows is not None:
            feats = torch.cat([self._stacks(c) for c in x.split(self.cpu_chunk)]) if chunked else self._stacks(x)
            return self._head(feats[rows], goal)
        if chunked:
            goals = goal.split(self.cpu_chunk) if self.film is not None else [None] * len(x.split(self.cpu_chunk))
            return torch.cat([self._head(self._stacks(c), g) for c, g in zip(x.split(self.cpu_chunk), goals)])
        return self._head(self._stacks(x), goal)

    def _stacks(self, x):  # (N, H, W, C) -> (N, C', H', W')
        x = x.permute(0, 3, 1, 2)
        for stack in self.stacks:
            x = stack(x)
        return x

    def _head(self, x, goal=None):  # the goal's FiLM (goal_film) and the dense layer
        if self.film is not None:
            scale, shift = self.film(goal.to(x.dtype))[:, :, None, None].chunk(2, dim=1)
            x = x * (1 + scale) + shift
        return self.dense(x.flatten(1))  # flatten in (C, H, W) order


class ImgObsProcess(nn.Module):
    def __init__(self, cfg: PolicyConfig, dense_norm: Optional[str], cnn_outsize: int = 256):
        super().__init__()
        self.cnn = ImpalaCNN(cfg, cnn_outsize)
        self.linear = NormLayer(cnn_outsize, cfg.hidsize, "linear", dense_norm)
        self.fovea = Fovea(cfg, dense_norm, cnn_outsize) if cfg.fovea_shape is not None else None

    def forward(self, x, goal=None, rows=None):  # goal: (R, embed_dim), read only with goal_film; rows: ImpalaCNN's
        out = self.linear(self.cnn(x, goal, rows))
        return out if self.fovea is None else out + self.fovea(x, goal, rows)


class Fovea(ImgObsProcess):
    """The centre crop of the frame (`PolicyConfig.fovea_shape`) through an image process of its own: ImpalaCNN
    down-stacks of `fovea_chans` and the dense layers to `hidsize`. Keys `net.img_process.fovea.cnn.*`, `.linear.*`."""

    def __init__(self, cfg: PolicyConfig, dense_norm: Optional[str], cnn_outsize: int = 256):
        fh, fw = cfg.fovea_shape
        h, w = cfg.img_shape[:2]
        super().__init__(dataclasses.replace(cfg, img_shape=[fh, fw, 3], impala_chans=list(cfg.fovea_chans),
                                             impala_width=1, fovea_shape=None), dense_norm, cnn_outsize)
        self.y0, self.x0, self.h, self.w = (h - fh) // 2, (w - fw) // 2, fh, fw

    def forward(self, x, goal=None, rows=None):  # (N, H, W, C) -> (R, hidsize)
        return super().forward(x[:, self.y0:self.y0 + self.h, self.x0:self.x0 + self.w], goal, rows)


def _normed_linear(cin: int, cout: int, scale: float, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(cin, cout, bias=bias)
    _fan_in_(layer, scale)
    return layer


class SelfAttention(nn.Module):
    """Multi-head attention over [KV cache | chunk] with VPT's relative-position bias and muP 1/e scaling.

    Keys (original order): `b_nd`, `q_layer`, `k_layer`, `v_layer`, `proj_layer`, `r_layer`.
    """

    NBASIS = 10

    def __init__(self, hidsize: int, heads: int, maxlen: int, clipped: bool, scale: float):
        super().__init__()
        self.heads, self.maxlen, self.clipped = heads, maxlen, clipped
        s = math.sqrt(scale)
        self.q_layer = _normed_linear(hidsize, hidsize, 0.1)
        self.k_layer = _normed_linear(hidsize, hidsize, 0.2, bias=False)
        self.v_layer = _normed_linear(hidsize, hidsize, s, bias=False)
        self.proj_layer = _normed_linear(hidsize, hidsize, s)
        self.r_layer = _normed_linear(hidsize, self.NBASIS * heads, 0.1)
        self.b_nd = nn.Parameter(torch.empty(self.NBASIS, maxlen))
        if not self.b_nd.is_meta:
            nn.init.normal_(self.b_nd, std=0.2)

    def _split(self, x):  # (B, t, h*e) -> (B, h, t, e); head k uses features [k*e, (k+1)*e)
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, -1).transpose(1, 2)

    def forward(self, y, first0, mask, K, V):
        """y (B, t, H) layer-normed input; first0 (B,) bool; mask (B, maxlen) bool; K, V (B, maxlen, H).
        Returns y + attention(y) and the new (mask, K, V)."""
        b, t, _ = y.shape
        maxlen = self.maxlen
        T = maxlen + t
        k_full = torch.cat([K.to(y.dtype), self.k_layer(y)], dim=1)  # (B, T, H)
        v_full = torch.cat([V.to(y.dtype), self.v_layer(y)], dim=1)
        q, k, v = self._split(self.q_layer(y)), self._split(k_full), self._split(v_full)
        e = q.shape[-1]

        # Relative-position bias: extra[i, j] = sum_n R[i, n] * b_nd[n, d], d = (maxlen + i) - j in [0, maxlen)
        r = self._split(self.r_layer(y))                                     # (B, h, t, 10)
        rel = torch.matmul(r.float(), self.b_nd.float())                     # (B, h, t, maxlen), by d
        i = torch.arange(t, device=y.device)[:, None]
        j = torch.arange(T, device=y.device)[None, :]
        d = maxlen + i - j                                                   # (t, T)
        in_band = (d >= 0) & (d < maxlen)
        extra = torch.gather(rel, 3, d.clamp(0, maxlen - 1).expand(b, self.heads, t, T))
        extra = extra.masked_fill(~in_band, 0.0)

        logits = torch.matmul(q, k.transpose(-1, -2)).float() * (1.0 / e) + extra  # muP: 1/e, not 1/sqrt(e)
        if self.clipped:
            visible_cache = mask & ~first0[:, None]                          # (B, maxlen)
            cols = torch.cat([visible_cache, visible_cache.new_ones(b, t)], dim=1)  # (B, T)
            visible = in_band[None] & cols[:, None, :]                      # (B, t, T)
            logits = logits.masked_fill(~visible[:, None], -1e9)
            mask = torch.cat([mask & ~first0[:, None], mask.new_ones(b, t)], dim=1)[:, -maxlen:]
        weights = torch.softmax(logits, dim=-1).to(v.dtype)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(b, t, -1)    # (B, t, H)
        out = y + self.proj_layer(out)
        return out, mask, k_full[:, -maxlen:].to(K.dtype), v_full[:, -maxlen:].to(V.dtype)


class MaskedAttention(nn.Module):
    """Holds `orc_block` (the attention layer) so the state_dict keys are `r.orc_block.*`."""

    def __init__(self, cfg: PolicyConfig, scale: float):
        super().__init__()
        self.orc_block = SelfAttention(cfg.hidsize, cfg.attention_heads, cfg.maxlen,
                                       cfg.attention_mask_style == "clipped_causal", scale)

    def forward(self, y, first0, mask, K, V):
        return self.orc_block(y, first0, mask, K, V)


class ResidualRecurrentBlock(nn.Module):
    """pre_r_ln → recurrence (attention: y + attn(y); LSTM: x + lstm(y)) → x + mlp1(mlp0(x))."""

    def __init__(self, cfg: PolicyConfig, index: int):
        super().__init__()
        self.kind = cfg.recurrence_type
        self.residual = cfg.recurrence_is_residual
        self.reverse = self.kind == "multi_layer_bilstm" and index % 2 == 1
        s = cfg.n_recurrence_layers ** -0.5 if self.residual else 1.0
        if cfg.use_pointwise_layer:
            if self.residual:
                s *= 2 ** -0.5
            h, hp = cfg.hidsize, cfg.hidsize * cfg.pointwise_ratio
            self.mlp0 = NormLayer(h, hp, "linear", "layer")
            self.mlp1 = NormLayer(hp, h, "linear", None, activation=cfg.pointwise_use_activation, init_scale=s)
        else:
            self.mlp0 = self.mlp1 = None
        self.pre_r_ln = nn.LayerNorm(cfg.hidsize)
        if self.kind == "transformer":
            self.r = MaskedAttention(cfg, scale=s)
        elif self.kind in ("multi_layer_lstm", "multi_layer_bilstm"):
            self.r = nn.LSTM(cfg.hidsize, cfg.hidsize, batch_first=True)
            if not self.r.weight_hh_l0.is_meta:
                with torch.no_grad():
                    for w in (self.r.weight_hh_l0, self.r.weight_ih_l0):
                        w.normal_(0.0, s * w.shape[0] ** -0.5)
                    self.r.bias_hh_l0.zero_()
                    self.r.bias_ih_l0.zero_()
        else:
            self.r = None

    def forward(self, x, first0, *state):
        y = self.pre_r_ln(x)
        if self.kind == "transformer":
            x, *state = self.r(y, first0, *state)
        elif self.r is not None:
            keep = (~first0).to(y.dtype)[:, None]
            h, c = (s_.to(y.dtype) * keep for s_ in state)
            y = y.flip(1) if self.reverse else y
            out, (h, c) = self.r(y, (h[None].contiguous(), c[None].contiguous()))
            out = out.flip(1) if self.reverse else out
            x = out + x if self.residual else out
            state = [h[0], c[0]]
        else:  # "none": identity recurrence on the normed input
            x = y
        if self.mlp0 is not None:
            x = x + self.mlp1(self.mlp0(x)) if self.residual else self.mlp1(self.mlp0(x))
        return (x, *state)


class RecurrentBlocks(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.blocks = nn.ModuleList(ResidualRecurrentBlock(cfg, i) for i in range(cfg.n_recurrence_layers))


class PolicyNet(nn.Module):
    """VPT's `MinecraftPolicy` with STEVE-1's `mineclip_embed_linear` (keys `net.*`)."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        # dense layers use LayerNorm where the CNN uses GroupNorm (VPT's dense_init_norm_kwargs)
        dense_norm = "layer" if cfg.init_norm_kwargs.get("group_norm_groups") is not None else None
        self.img_process = ImgObsProcess(cfg, dense_norm)
        self.pre_lstm_ln = nn.LayerNorm(cfg.hidsize) if cfg.use_pre_lstm_ln else None
        self.recurrent_layer = RecurrentBlocks(cfg)
        self.lastlayer = NormLayer(cfg.hidsize, cfg.hidsize, "linear", dense_norm)
        self.final_ln = nn.LayerNorm(cfg.hidsize)
        self.mineclip_embed_linear = nn.Linear(cfg.embed_dim, cfg.hidsize)


class CategoricalHead(nn.Module):
    def __init__(self, hidsize: int, n: int):
        super().__init__()
        self.linear_layer = nn.Linear(hidsize, n)


class NormalizeEwma(nn.Module):
    """Value normaliser; its statistics are frozen nn.Parameters (they are in the original state_dict)."""

    def __init__(self, size: int = 1, epsilon: float = 1e-5):
        super().__init__()
        self.epsilon = epsilon
        self.running_mean = nn.Parameter(torch.zeros(size), requires_grad=False)
        self.running_mean_sq = nn.Parameter(torch.zeros(size), requires_grad=False)
        self.debiasing_term = nn.Parameter(torch.tensor(0.0), requires_grad=False)

    def denormalize(self, x):
        debias = self.debiasing_term.clamp(min=self.epsilon)
        mean = self.running_mean / debias
        var = (self.running_mean_sq / debias - mean ** 2).clamp(min=1e-2)
        return x * var.sqrt() + mean


class ScaledMSEHead(nn.Module):
    def __init__(self, hidsize: int):
        super().__init__()
        self.linear = nn.Linear(hidsize, 1)
        self.normalizer = NormalizeEwma(1)


# --------------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------------
class Steve1Policy(nn.Module):
    """STEVE-1 policy. `forward(img, goal_embed, first, state) -> (log_probs, state)`; see the module doc."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        self.net = PolicyNet(cfg)
        self.value_head = ScaledMSEHead(cfg.hidsize)
        self.pi_head = nn.ModuleDict({"camera": CategoricalHead(cfg.hidsize, N_CAMERA),
                                      "buttons": CategoricalHead(cfg.hidsize, N_BUTTONS)})
        self.activation_checkpointing = cfg.activation_checkpointing

    # ---- state ------------------------------------------------------------------------------------
    @property
    def state_tensors_per_block(self) -> int:
        return {"transformer": 3, "none": 0}.get(self.cfg.recurrence_type, 2)

    def initial_state(self, batch_size: int, device=None) -> State:
        """Fresh memory for `batch_size` rows (equivalent to the original's `initial_state` + `first=True`)."""
        p = self.net.final_ln.weight
        device = p.device if device is None else device
        cfg, state = self.cfg, []
        for _ in range(cfg.n_recurrence_layers):
            if cfg.recurrence_type == "transformer":
                state += [torch.zeros(batch_size, cfg.maxlen, dtype=torch.bool, device=device),
                          torch.zeros(batch_size, cfg.maxlen, cfg.hidsize, dtype=p.dtype, device=device),
                          torch.zeros(batch_size, cfg.maxlen, cfg.hidsize, dtype=p.dtype, device=device)]
            elif cfg.recurrence_type != "none":
                state += [torch.zeros(batch_size, cfg.hidsize, dtype=p.dtype, device=device) for _ in range(2)]
        return state

    # ---- forward ----------------------------------------------------------------------------------
    def _check_inputs(self, img, goal_embed, first, state):
        cfg = self.cfg
        if img.dtype != torch.uint8 or img.ndim != 5 or list(img.shape[2:]) != cfg.img_shape:
            raise ValueError(f"img must be uint8 (B, T, {', '.join(map(str, cfg.img_shape))}); got "
                             f"{img.dtype} {tuple(img.shape)} (resize frames to {cfg.img_shape[:2]} first)")
        b, t = img.shape[:2]
        if goal_embed is not None and tuple(goal_embed.shape) != (b, t, cfg.embed_dim):
            raise ValueError(f"goal_embed must be (B, T, embed_dim) = {(b, t, cfg.embed_dim)}; got "
                             f"{tuple(goal_embed.shape)} (is the policy's embed_dim right for your embedder?)")
        if tuple(first.shape) != (b, t):
            raise ValueError(f"first must be bool (B, T) = {(b, t)}; got {tuple(first.shape)}")
        n = self.state_tensors_per_block * cfg.n_recurrence_layers
        if state is not None and (len(state) != n or any(s.shape[0] != b for s in state)):
            raise ValueError(f"state must be a list of {n} tensors with batch {b} on dim 0 "
                             f"(use policy.initial_state({b})); got {len(state)} tensors")

    def forward(self, img: torch.Tensor, goal_embed: Optional[torch.Tensor], first: torch.Tensor,
                state: Optional[State] = None, return_value: bool = False):
        """img (B, T, H, W, 3) uint8 RGB; goal_embed (B, T, embed_dim) float (None = zeros, the
        unconditional goal); first (B, T) bool (only first[:, 0] is read); state from `initial_state`.

        Returns ({"buttons": (B, T, 8641), "camera": (B, T, 121)[, "value": (B, T)]} float32
        log-probs after temperature, new state)."""
        self._check_inputs(img, goal_embed, first, state)
        b, t = img.shape[:2]
        net = self.net
        if state is None:
            state = self.initial_state(b, device=img.device)
        dtype = net.final_ln.weight.dtype  # float32 unless the whole policy was cast (e.g. .half())
        x = (img.reshape(b * t, *img.shape[2:]) / 255.0).to(dtype)          # (B*T, H, W, 3)
        if goal_embed is None:
            goal_embed = x.new_zeros(b, t, self.cfg.embed_dim)
        goal_embed = goal_embed.to(dtype)
        film = goal_embed.reshape(b * t, -1) if self.cfg.goal_film else None
        x = net.img_process(x, film).reshape(b, t, -1)                     # (B, T, hidsize)
        x = x + net.mineclip_embed_linear(goal_embed)
        if net.pre_lstm_ln is not None:
            x = net.pre_lstm_ln(x)

        first0 = first[:, 0].bool()
        n, new_state = self.state_tensors_per_block, []
        for k, block in enumerate(net.recurrent_layer.blocks):
            block_state = state[k * n:(k + 1) * n]
            if self.activation_checkpointing and torch.is_grad_enabled():
                x, *block_state = checkpoint(block, x, first0, *block_state, use_reentrant=False)
            else:
                x, *block_state = block(x, first0, *block_state)
            new_state += block_state

        x = net.final_ln(net.lastlayer(F.relu(x)))                         # (B, T, hidsize)
        log_probs = {name: F.log_softmax(self.pi_head[name].linear_layer(x).float()
                                         / self.cfg.temperature, dim=-1)
                     for name in ("buttons", "camera")}
        if return_value:
            v = self.value_head.linear(x).float()
            log_probs["value"] = self.value_head.normalizer.denormalize(v)[..., 0]
        return log_probs, new_state

    def set_activation_checkpointing(self, enabled: bool = True) -> "Steve1Policy":
        self.activation_checkpointing = enabled
        return self

    def goal_layers(self) -> dict[str, nn.Linear]:
        """The layers that read the goal embedding, by name: `net.mineclip_embed_linear` and, with `goal_film`, each
        ImpalaCNN's FiLM (`ImpalaCNN.film`)."""
        layers = {"net.mineclip_embed_linear": self.net.mineclip_embed_linear}
        layers.update({f"{name}.film": m.film for name, m in self.named_modules()
                       if isinstance(m, ImpalaCNN) and m.film is not None})
        return layers

    @torch.no_grad()
    def null_goal_axes(self, axes: torch.Tensor) -> "Steve1Policy":
        """Make the policy blind to the goal's components along `axes` ((k, embed_dim), rows of full rank; U = an
        orthonormal basis of their span): every goal layer's weight W becomes W (I - UᵀU), so the goal g and g + Uᵀc
        act alike (exactly in float32 weights; half-precision weights round the product). A linear map, so the zero
        goal (the unconditioned agent) still gives exactly the bias; the file layout does not change."""
        a = axes.detach().to(dtype=torch.float64)
        if a.ndim != 2 or a.shape[1] != self.cfg.embed_dim or not 1 <= a.shape[0] < self.cfg.embed_dim:
            raise ValueError(f"goal axes must be (k, {self.cfg.embed_dim}) with 1 <= k < {self.cfg.embed_dim}, "
                             f"got {tuple(axes.shape)}")
        q, r = torch.linalg.qr(a.T)  # (D, k): an orthonormal basis of the rows' span
        diag = r.diagonal().abs()
        if not torch.isfinite(a).all() or diag.min() <= 1e-6 * diag.max().clamp(min=1e-12):
            raise ValueError("goal axes must be finite and linearly independent")
        keep = torch.eye(a.shape[1], dtype=torch.float64, device=a.device) - q @ q.T
        for m in self.goal_layers().values():
            w = m.weight
            w.copy_((w.to(torch.float64) @ keep.to(w.device)).to(w.dtype))
        return self


# --------------------------------------------------------------------------------------------------
# Helpers on log-probs and state
# --------------------------------------------------------------------------------------------------
def logprob(log_probs: dict, buttons: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """log p(buttons) + log p(camera) per step, (B, T). (The original training loss sums this over T.)"""
    lp_b = log_probs["buttons"].gather(-1, buttons.long().unsqueeze(-1))[..., 0]
    lp_c = log_probs["camera"].gather(-1, camera.long().unsqueeze(-1))[..., 0]
    return lp_b + lp_c


def sample(log_probs: dict, generator: Optional[torch.Generator] = None,
           deterministic: bool = False) -> dict:
    """Gumbel-max sample (as the original: u == 1 → 0.999) or argmax; returns {"buttons", "camera"} int64."""
    out = {}
    for name in ("buttons", "camera"):
        lp = log_probs[name]
        if deterministic:
            out[name] = lp.argmax(-1)
            continue
        u = torch.rand(lp.shape, generator=generator, device=lp.device, dtype=lp.dtype)
        u = u.masked_fill(u == 1.0, 0.999)
        out[name] = torch.argmax(lp - torch.log(-torch.log(u)), dim=-1)
    return out


def select_state(state: State, idx) -> State:
    """Rows `idx` (int, slice, list or tensor) of every state tensor; an int keeps the batch dim."""
    if isinstance(idx, int):
        idx = slice(idx, idx + 1)
    return [s[idx] for s in state]


def cat_states(states: list) -> State:
    """Concatenate several states along the batch dim."""
    return [torch.cat(parts, dim=0) for parts in zip(*states)]


def detach_state(state: State) -> State:
    return [s.detach() for s in state]


# --------------------------------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------------------------------
def build_policy(preset_or_cfg: Union[str, PolicyConfig] = "debug", device=None, **overrides) -> Steve1Policy:
    """A freshly initialised policy from a preset name or a `PolicyConfig` (overrides: config fields)."""
    if isinstance(preset_or_cfg, PolicyConfig):
        cfg = dataclasses.replace(preset_or_cfg, **overrides) if overrides else preset_or_cfg
    else:
        cfg = PolicyConfig.preset(preset_or_cfg, **overrides)
    policy = Steve1Policy(cfg)
    return policy.to(device) if device is not None else policy
