"""CFG agent: STEVE-1 episode streams with classifier-free guidance, one at a time or many in one forward.

A stream (`AgentStream`) is what a serving session or an evaluation episode holds between steps:
the goal embedding, its guidance scale, a seeded generator, and the recurrent state. With guidance
the state has **two rows**: row 0 is the conditional stream (sees the goal), row 1 the unconditional
stream (goal = zeros); both see the same frames and keep their own memory, as in the original
`MinecraftPolicy.act(cond_scale=...)`. Each step combines every head's log-probs as

    logits = (1 + s) * logp_cond - s * logp_uncond          # s = cond_scale; s = 0: plain conditional

and samples with Gumbel-max from the stream's own generator (deterministic: argmax). `cond_scale=None`
keeps a single conditional row (the original's `reset(None)`).

`act_batch(policy, streams, povs)` runs any number of streams in **one** forward pass: their state rows
are concatenated, each row keeps its own scale and generator, and the noise is drawn per stream in a
fixed order, so a stream gets the same actions batched as alone. `two_pass_step` is the reference
computation (one forward per stream row) used by tests and by the benchmark's baseline.

`set_precision(policy, "bf16")` makes every step of that policy run its forward under bfloat16 autocast (an opt-in
speed mode: 1.8x the actions/s of fp32 at 2x on this project's AMX CPU; the guided logits differ from fp32's by up
to about 0.2 and 7 % of greedy actions differ: benchmarks/RESULTS.md). The recurrent state stays float32.

`Steve1Agent` holds one stream for acting in this process (`Steve1Agent.load(...)`, `reset(prompt=...)`,
`act(pov)`); `text_goal` is the one prompt -> goal computation, the server's and the agent's.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from steve1_ray.actions import N_BUTTONS, N_CAMERA, policy_to_env

AGENT_RES = 128  # the policy sees 128x128 RGB frames
HEADS = ("buttons", "camera")
HEAD_SIZES = {"buttons": N_BUTTONS, "camera": N_CAMERA}


# ----------------------------------------------------------------------------------------- inputs

def resize_pov(pov: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (128, 128, 3) uint8 with cv2 INTER_LINEAR, as the original agent (no-op at 128)."""
    pov = np.asarray(pov)
    if pov.ndim != 3 or pov.shape[2] != 3:
        raise ValueError(f"pov must be an (H, W, 3) RGB image, got shape {pov.shape}")
    if pov.dtype != np.uint8:
        raise ValueError(f"pov must be uint8 (0-255), got {pov.dtype}")
    if pov.shape[:2] == (AGENT_RES, AGENT_RES):
        return np.ascontiguousarray(pov)
    return cv2.resize(pov, (AGENT_RES, AGENT_RES), interpolation=cv2.INTER_LINEAR)


def policy_embed_dim(policy: torch.nn.Module) -> int:
    """Goal-embedding width the policy expects (512 for the released STEVE-1)."""
    cfg = getattr(policy, "cfg", None)
    if cfg is not None and getattr(cfg, "embed_dim", None):
        return int(cfg.embed_dim)
    linear = policy.net.mineclip_embed_linear  # fallback: read it off the layer
    return int(linear.in_features)


def _device(policy: torch.nn.Module) -> torch.device:
    return next(policy.parameters()).device


PRECISIONS = ("fp32", "bf16")
"""inference precisions of a policy's steps: fp32 (the original's, the default) or bf16 (autocast, opt-in)"""


def set_precision(policy: torch.nn.Module, precision: str) -> torch.nn.Module:
    """Run this policy's steps (`act_batch`, `two_pass_step`) in `precision`; returns the policy."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    policy.steve1_precision = precision
    return policy


def _precision(policy: torch.nn.Module):
    """The autocast context of the policy's precision (nothing for fp32)."""
    if getattr(policy, "steve1_precision", "fp32") == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=_device(policy).type, dtype=torch.bfloat16)


def _float_state(state: list[torch.Tensor]) -> list[torch.Tensor]:
    """State tensors back to float32 after an autocast step (sessions keep, sync and batch one layout)."""
    return [t.float() if t.is_floating_point() and t.dtype != torch.float32 else t for t in state]


def _state_ops():
    from steve1_ray.models.policy import cat_states, select_state

    return cat_states, select_state


# ----------------------------------------------------------------------------------------- streams

def make_generator(seed: int | None) -> tuple[torch.Generator, int]:
    """A CPU generator for the Gumbel noise; `seed=None` draws one from the OS (returned, for replays)."""
    if seed is None:
        seed = int.from_bytes(os.urandom(7), "little")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen, int(seed)


@dataclass
class AgentStream:
    """Everything one episode needs between steps. `state` has 2 rows when guided, else 1."""

    goal_embed: torch.Tensor  # (D,) float32, on the policy's device
    cond_scale: float | None
    generator: torch.Generator
    state: list[torch.Tensor]
    seed: int
    deterministic: bool = False
    steps: int = 0
    last: dict = field(default_factory=dict)  # last step's joint indices, for diagnostics
    slab: tuple | None = field(default=None, repr=False, compare=False)
    """(batched state, first row, the `state` list cut from it) after an `act_batch`: `state` holds views of that
    batch's rows, and when the same streams step together again in the same order their state is that batch
    as it is (no concatenation, no copies; at 2x a guided session's memory is 8 MiB)"""

    @property
    def n_rows(self) -> int:
        return 1 if self.cond_scale is None else 2


def check_goal(policy: torch.nn.Module, goal_embed: Any) -> torch.Tensor:
    """Goal embedding as a (D,) float32 tensor on the policy's device; wrong sizes name the expected one."""
    dim = policy_embed_dim(policy)
    if isinstance(goal_embed, torch.Tensor):
        goal = goal_embed.detach().float().reshape(-1)
    else:
        goal = torch.tensor(np.array(goal_embed, dtype=np.float32)).reshape(-1)
    if goal.numel() != dim:
        raise ValueError(f"goal embedding has {goal.numel()} values but this policy expects {dim} "
                         f"(a MineCLIP embedding of width {dim})")
    if not torch.isfinite(goal).all():
        raise ValueError("goal embedding contains NaN or infinite values")
    return goal.to(_device(policy))


def text_goal(mineclip: torch.nn.Module, prior: torch.nn.Module | None, prompt: str,
              prior_seed: int | None = 0) -> np.ndarray:
    """Prompt -> MineCLIP text embedding -> one prior sample (seeded) = the visual goal embedding (D,) float32.
    Without a prior the text embedding itself is the goal. The server's goals and `Steve1Agent.goal` are this."""
    with torch.no_grad():
        goal = mineclip.encode_text([prompt])  # (1, D)
        if prior is not None:
            goal = prior.sample(goal, seed=prior_seed)
    return goal.reshape(-1).float().cpu().numpy()


def new_stream(policy: torch.nn.Module, goal_embed: Any, cond_scale: float | None = 6.0,
               seed: int | None = None, deterministic: bool = False) -> AgentStream:
    """A fresh episode stream: zero memory for the conditional (and, if guided, unconditional) row."""
    if cond_scale is not None:
        cond_scale = float(cond_scale)
        if not np.isfinite(cond_scale):
            raise ValueError(f"cond_scale must be a finite number, got {cond_scale!r}")
    gen, seed = make_generator(seed)
    rows = 1 if cond_scale is None else 2
    state = [s.to(_device(policy)) for s in policy.initial_state(rows)]
    return AgentStream(goal_embed=check_goal(policy, goal_embed), cond_scale=cond_scale, generator=gen,
                       state=state, seed=seed, deterministic=deterministic)


# ----------------------------------------------------------------------------------------- math

def guided_logits(logp_cond: torch.Tensor, logp_uncond: torch.Tensor, cond_scale) -> torch.Tensor:
    """(1 + s) * cond - s * uncond on log-softmax outputs (not renormalised), s broadcast over rows."""
    s = torch.as_tensor(cond_scale, dtype=logp_cond.dtype, device=logp_cond.device)
    while s.ndim < logp_cond.ndim:
        s = s.unsqueeze(-1)
    return (1 + s) * logp_cond - s * logp_uncond


def gumbel_noise(n: int, generator: torch.Generator) -> torch.Tensor:
    """-log(-log u) with u ~ U[0, 1) from `generator` (u == 1 -> 0.999, as VPT), shape (n,), CPU float32."""
    u = torch.rand(n, generator=generator)
    u = torch.where(u >= 1.0, torch.full_like(u, 0.999), u)
    return -torch.log(-torch.log(u))


def _draw_noise(streams: Sequence[AgentStream]) -> dict[str, torch.Tensor]:
    """Per-stream noise, in a fixed order (buttons, then camera) from each stream's own generator."""
    noise = {h: [] for h in HEADS}
    for st in streams:
        for h in HEADS:
            if st.deterministic:
                noise[h].append(torch.zeros(HEAD_SIZES[h]))
            else:
                noise[h].append(gumbel_noise(HEAD_SIZES[h], st.generator))
    return {h: torch.stack(v) for h, v in noise.items()}  # (S, n)


def _combine_rows(log_probs: dict[str, torch.Tensor], streams: Sequence[AgentStream]) -> dict[str, torch.Tensor]:
    """Forward output rows (R, n) -> per-stream guided logits (S, n)."""
    cond_idx, uncond_idx, scales, row = [], [], [], 0
    for st in streams:
        cond_idx.append(row)
        if st.cond_scale is None:  # unguided: uncond = cond with scale 0 gives cond back
            uncond_idx.append(row)
            scales.append(0.0)
        else:
            uncond_idx.append(row + 1)
            scales.append(st.cond_scale)
        row += st.n_rows
    dev = next(iter(log_probs.values())).device
    ci, ui = torch.tensor(cond_idx, device=dev), torch.tensor(uncond_idx, device=dev)
    return {h: guided_logits(lp[ci], lp[ui], scales) for h, lp in log_probs.items()}


def _to_env_rows(buttons: np.ndarray, camera: np.ndarray) -> list[dict]:
    env = policy_to_env(buttons, camera)  # arrays with leading dim S
    out = []
    for i in range(len(buttons)):
        act = {k: int(np.asarray(v)[i]) for k, v in env.items() if k != "camera"}
        act["camera"] = np.asarray(env["camera"][i], dtype=np.float32)
        out.append(act)
    return out


# ----------------------------------------------------------------------------------------- steps

def _shared_frame_forward(policy, frames: torch.Tensor, frame_of_row: torch.Tensor, goal: torch.Tensor,
                          first: torch.Tensor, state: list[torch.Tensor]):
    """`policy(img[frame_of_row], goal, first, state)` with the image encoder run once per *frame*.

    A guided session's two rows see the same frame, so the ImpalaCNN (most of the debug preset's cost)
    runs on S frames instead of R = 2S rows; everything after it is the policy's own modules in the
    policy's order. A `goal_film` policy's goal acts after the last convolution, so its down-stacks run per frame
    and its FiLM and dense layers per row. tests/test_agent.py checks this equals `policy.forward` (the two-pass
    reference)."""
    import torch.nn.functional as F

    net, cfg = policy.net, policy.cfg
    s = frames.shape[0]
    if cfg.goal_film:  # the goal scales and shifts the CNNs' last channels: convolutions per frame, the rest per row
        x = net.img_process(frames.reshape(s, *frames.shape[2:]) / 255.0, goal[:, 0], rows=frame_of_row)
        x = x.unsqueeze(1)  # (R, 1, hidsize)
    else:
        x = net.img_process(frames.reshape(s, *frames.shape[2:]) / 255.0)  # (S, hidsize)
        x = x[frame_of_row].unsqueeze(1)  # (R, 1, hidsize)
    x = x + net.mineclip_embed_linear(goal.to(net.mineclip_embed_linear.weight.dtype))
    if net.pre_lstm_ln is not None:
        x = net.pre_lstm_ln(x)
    first0 = first[:, 0].bool()
    n, new_state = policy.state_tensors_per_block, []
    for k, block in enumerate(net.recurrent_layer.blocks):
        x, *block_state = block(x, first0, *state[k * n:(k + 1) * n])
        new_state += block_state
    x = net.final_ln(net.lastlayer(F.relu(x)))
    log_probs = {h: F.log_softmax(policy.pi_head[h].linear_layer(x).float() / cfg.temperature, dim=-1)
                 for h in HEADS}
    return log_probs, new_state


def _can_share_frames(policy) -> bool:
    net = getattr(policy, "net", None)
    return all(hasattr(net, a) for a in ("img_process", "mineclip_embed_linear", "recurrent_layer", "lastlayer",
                                         "final_ln", "pre_lstm_ln")) and hasattr(policy, "pi_head")


@torch.inference_mode()
def batched_log_probs(policy: torch.nn.Module, streams: Sequence[AgentStream],
                      povs: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """One forward for all rows of all streams; updates each stream's state. Returns (R, n) log-probs."""
    _, select_state = _state_ops()
    dev = _device(policy)
    frames, frame_of_row, goals, firsts = [], [], [], []
    for j, (st, pov) in enumerate(zip(streams, povs)):
        frames.append(torch.tensor(resize_pov(pov)))  # copy: arrays from Ray are read-only
        zeros = torch.zeros_like(st.goal_embed)
        for r in range(st.n_rows):
            frame_of_row.append(j)
            goals.append(st.goal_embed if r == 0 else zeros)
            firsts.append(st.steps == 0)
    frames_t = torch.stack(frames).to(dev)[:, None]  # (S, 1, 128, 128, 3) uint8
    rows = torch.tensor(frame_of_row, device=dev)  # (R,)
    goal = torch.stack(goals)[:, None]  # (R, 1, D) float32
    first = torch.tensor(firsts, device=dev)[:, None]  # (R, 1) bool
    state = _batched_state(streams)
    with _precision(policy):
        if _can_share_frames(policy):
            log_probs, new_state = _shared_frame_forward(policy, frames_t, rows, goal, first, state)
        else:
            log_probs, new_state = policy(frames_t[rows], goal, first, state)
    new_state = _float_state(new_state)
    row = 0
    for st in streams:
        st.state = select_state(new_state, slice(row, row + st.n_rows))  # views of the batch's rows
        st.slab = (new_state, row, st.state)
        row += st.n_rows
    return {h: log_probs[h][:, 0].float() for h in HEADS}  # (R, n)


def batch_order(streams: Sequence[AgentStream]) -> list[int]:
    """An order of `streams` that lets `act_batch` reuse their last batch's state as it is (its rows in order);
    the actions do not depend on the order (each stream draws its own noise)."""
    return sorted(range(len(streams)), key=lambda i: (0, id(streams[i].slab[0]), streams[i].slab[1])
                  if streams[i].slab is not None else (1, 0, i))


def release_slab(stream: AgentStream) -> None:
    """Give a stream that is leaving its batch (idle, being dropped) its own copy of its state rows, so that it
    does not keep the whole batch's state alive."""
    if stream.slab is not None:
        if stream.slab[2] is stream.state:
            stream.state = [t.clone() for t in stream.state]
        stream.slab = None


def exported_state(stream: AgentStream) -> list[np.ndarray]:
    """The stream's recurrent state as C-contiguous CPU arrays, for the session store. A stream stepped in a batch
    holds strided views of the batch's state, and pickle (Ray's serializer) can pass only contiguous arrays out of
    band: strided ones are copied into the pickle stream and out again, which made one state sync of 16 sessions
    of 2x (268 MB) stall the replica for 6.3 s (benchmarks/RESULTS.md, session 23); contiguous, it takes ~0.2 s."""
    return [np.ascontiguousarray(t.detach().cpu().numpy()) for t in stream.state]


def _batched_state(streams: Sequence[AgentStream]) -> list[torch.Tensor]:
    """The streams' states stacked row-wise: the last batch's state itself when these streams were that batch,
    in this order, and none of them has had its state replaced since (reset, a state reloaded); else a copy."""
    if len(streams) == 1:
        return streams[0].state
    cat_states = _state_ops()[0]
    slab = streams[0].slab[0] if streams[0].slab is not None else None
    row = 0
    for st in streams:
        if st.slab is None or st.slab[0] is not slab or st.slab[1] != row or st.slab[2] is not st.state:
            return cat_states([s.state for s in streams])
        row += st.n_rows
    return slab if row == slab[0].shape[0] else cat_states([s.state for s in streams])


def _sample(streams: Sequence[AgentStream], logits: dict[str, torch.Tensor]) -> list[dict]:
    noise = _draw_noise(streams)
    picks = {h: (logits[h].cpu() + noise[h]).argmax(-1).numpy() for h in HEADS}  # (S,)
    actions = _to_env_rows(picks["buttons"].astype(np.int64), picks["camera"].astype(np.int64))
    for i, st in enumerate(streams):
        st.steps += 1
        st.last = {"buttons": int(picks["buttons"][i]), "camera": int(picks["camera"][i])}
    return actions


def act_batch(policy: torch.nn.Module, streams: Sequence[AgentStream], povs: Sequence[np.ndarray],
              return_logits: bool = False):
    """One step for many streams in one forward pass -> list of MineRL env action dicts (one per stream).

    Each stream's state, step count and generator advance exactly as if it had been stepped alone.
    With `return_logits`, also returns the guided logits {head: (S, n)} before sampling.
    """
    if len(streams) != len(povs):
        raise ValueError(f"{len(streams)} streams but {len(povs)} observations")
    if not streams:
        return ([], {}) if return_logits else []
    log_probs = batched_log_probs(policy, streams, povs)
    logits = _combine_rows(log_probs, streams)
    actions = _sample(streams, logits)
    return (actions, logits) if return_logits else actions


@torch.inference_mode()
def two_pass_step(policy: torch.nn.Module, stream: AgentStream, pov: np.ndarray,
                  return_logits: bool = False):
    """Reference step: a batch-1 forward for the conditional row, another for the unconditional row."""
    _, select_state = _state_ops()
    dev = _device(policy)
    img = torch.from_numpy(resize_pov(pov)).to(dev)[None, None]  # (1, 1, 128, 128, 3)
    first = torch.tensor([[stream.steps == 0]], device=dev)
    outs, states = [], []
    for r in range(stream.n_rows):
        goal = (stream.goal_embed if r == 0 else torch.zeros_like(stream.goal_embed))[None, None]
        row_state = select_state(stream.state, torch.tensor([r], device=dev))
        with _precision(policy):
            lp, st = policy(img, goal, first, row_state)
        outs.append({h: lp[h][:, 0].float() for h in HEADS})
        states.append(_float_state(st))
    stream.state = states[0] if len(states) == 1 else _state_ops()[0](states)
    if stream.cond_scale is None:
        logits = outs[0]
    else:
        logits = {h: guided_logits(outs[0][h], outs[1][h], [stream.cond_scale]) for h in HEADS}
    action = _sample([stream], logits)[0]
    return (action, logits) if return_logits else action


# ----------------------------------------------------------------------------------------- agent

class Steve1Agent:
    """One STEVE-1 agent acting in this process, one episode at a time: `reset(prompt=...)`, then `act(pov)` per
    step. It is the in-process counterpart of a served session (`steve1_ray.client`): the same guided step
    (`act_batch`) and the same prompt -> goal computation (`text_goal`), without Ray or HTTP.

        from steve1_ray import Steve1Agent
        from steve1_ray.world import make_env

        agent = Steve1Agent.load("released")        # policy, embedder and prior: the embedded world's released files
        env = make_env("crafter")
        obs = env.reset(seed=1)
        agent.reset(prompt="chop a tree", cond_scale=6.0, seed=0)
        for _ in range(20):
            obs, reward, done, info = env.step(agent.act(obs["pov"]))   # a MineRL action dict

    policy: a `Steve1Policy` (`steve1_ray.load_policy`, `models.loading.load_policy_spec`). cond_scale: guidance
    scale (6.0 for text prompts, 7.0 for visual ones in the original; None = no guidance, one stream). seed: the
    Gumbel noise seed (None: drawn from the OS). mineclip, prior: the text side, needed only for prompts (`load`
    brings them); without a prior a prompt's goal is its text embedding.
    """

    def __init__(self, policy: torch.nn.Module, cond_scale: float | None = 6.0, seed: int | None = None,
                 deterministic: bool = False, mineclip: torch.nn.Module | None = None,
                 prior: torch.nn.Module | None = None):
        self.policy = policy.eval()
        self.cond_scale = cond_scale
        self.seed = seed
        self.deterministic = deterministic
        self.mineclip, self.prior = mineclip, prior
        self.goal_embed: torch.Tensor | None = None  # (D,) the goal `act` uses when it is given none
        self.stream: AgentStream | None = None

    @classmethod
    def load(cls, policy: str = "released", weights: str | None = None, mineclip: str | None = "released",
             prior: str | None = "released", device: str = "cpu", precision: str = "fp32",
             **kwargs) -> "Steve1Agent":
        """An agent from what a user names, as `steve1 serve` reads it (`models/loading.py`): `policy` a preset, an
        original `.model` file (with `weights`), a training checkpoint folder or `released`; `mineclip` MineCLIP's
        `attn.pth`, one of our embedders or `released`; `prior` `steve1_prior.pt`, ours, `released` or None (the
        text embedding is the goal). `precision`: fp32 or bf16 (`set_precision`). `kwargs` go to the constructor
        (cond_scale, seed, deterministic).

        `released` is the embedded world's STEVE-1 policy (the one the quick start fine-tunes, docs/world.md); a
        fine-tuned checkpoint loads the same way (`Steve1Agent.load("runs/.../checkpoint_...")`)."""
        from steve1_ray.models.loading import load_goal_models, load_policy_spec

        model = set_precision(load_policy_spec(policy, weights, device=device), precision)
        embedder, goal_prior = (None, None) if mineclip is None else load_goal_models(
            mineclip, prior, device=device, embed_dim=policy_embed_dim(model))
        return cls(model, mineclip=embedder, prior=goal_prior, **kwargs)

    def goal(self, prompt: str, prior_seed: int | None = 0) -> np.ndarray:
        """A text prompt -> its goal embedding (D,) float32, as the server's `POST /goals` computes it."""
        if self.mineclip is None:
            raise ValueError("this agent has no text encoder: build it with Steve1Agent.load(...) or pass mineclip= "
                             "(and prior=), or give it a goal embedding instead of a prompt")
        return text_goal(self.mineclip, self.prior, prompt, prior_seed)

    def reset(self, prompt: str | None = None, goal_embed: Any = None, cond_scale: float | None | str = "keep",
              seed: int | None | str = "keep", prior_seed: int | None = 0) -> None:
        """Forget the episode: fresh memory for both streams, and the generator re-seeded. A `prompt` (through
        `goal`, seeded by `prior_seed`) or a `goal_embed` becomes the goal `act` uses; without either the goal is
        kept. `cond_scale` and `seed` replace the constructor's when given."""
        if prompt is not None and goal_embed is not None:
            raise ValueError("give a prompt or a goal_embed, not both")
        if prompt is not None:
            goal_embed = self.goal(prompt, prior_seed)
        if goal_embed is not None:
            self.goal_embed = check_goal(self.policy, goal_embed)
        if cond_scale != "keep":
            self.cond_scale = cond_scale
        if seed != "keep":
            self.seed = seed
        self.stream = None

    def act(self, obs_pov: np.ndarray, goal_embed: Any = None) -> dict:
        """obs_pov (H, W, 3) uint8 RGB -> MineRL action dict (buttons int, camera (2,) degrees). `goal_embed` (D,)
        replaces the goal for this and later steps (the original allows a change mid-episode); None keeps the
        one set by `reset`."""
        if goal_embed is not None:
            self.goal_embed = check_goal(self.policy, goal_embed)
        if self.goal_embed is None:
            raise ValueError("no goal: call reset(prompt=...) or reset(goal_embed=...), or pass goal_embed to act")
        if self.stream is None:
            self.stream = new_stream(self.policy, self.goal_embed, self.cond_scale, self.seed, self.deterministic)
        else:
            self.stream.goal_embed = self.goal_embed
        return act_batch(self.policy, [self.stream], [obs_pov])[0]
