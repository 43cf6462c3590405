"""Programmatic evaluation: K episodes per (goal, guidance scale) + the unconditioned baseline (+ a foundation
policy) -> a report.

    steve1 evaluate --config configs/eval/debug.yaml episodes=4 out_dir=runs/eval_debug
    python jobs/evaluate.py --config configs/eval/crafter.yaml policy=runs/train/ckpt/000100

What it does, top to bottom (`run_evaluation`):
1. Plan: every (goal, scale, episode) becomes one `job` with its own seeds (`plan_jobs`). The world seed
   depends only on the episode index, so every cell plays the same K worlds (paired comparisons); the
   goal seed (the prior's sample) on (goal, episode), so every scale of a goal gets the same K goal
   embeddings; the agent seed (Gumbel noise of action sampling) on (goal, scale, episode).
   Other phrasings of a prompt (`paraphrases`) are goals of their own, scored with the prompt's
   targets and played with the prompt's goal and agent seeds (paired with the prompt's cells); a
   foundation policy (`baseline_policy`) plays the baseline's worlds without a goal.
2. Goals: text prompts go through the embedder's `encode_text` and, if a prior is given, one seeded
   `prior.sample` per episode (as STEVE-1 does per episode); visual goals are a stored embedding
   (.npy/.pt) or a clip (.mp4/.npz frames) encoded with `encode_video`. The baselines' goal is zeros.
3. Rollouts: `EvalWorker` Ray actors each hold the policy (and the foundation policy) and a few worlds,
   and play chunks of jobs of one policy in lockstep, all streams in one forward pass
   (`steve1_ray.agent.act_batch`); the driver prints progress lines with an ETA. Per step, each episode's
   `info` goes into a `MetricTracker`; a few episodes per cell are also encoded as mp4 with the prompt
   written over the frames (`steve1_ray.world.video`'s `Mp4Writer` and `draw_prompt`).
4. Report: `steve1_ray.evaluate.report.write_report` (Markdown with CIs, plots, per-episode JSON).

Which achievement a prompt asks for comes from `steve1_ray.evaluate.targets` (`PROMPT_ACHIEVEMENTS`,
documented in docs/evaluation.md) merged with the config's `prompt_achievements`.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

import numpy as np

from steve1_ray.cluster import connect
from steve1_ray.config import ConfigError, check, from_dict, save_config, to_dict
from steve1_ray.evaluate.targets import targets_for
from steve1_ray.hostmem import runtime_env
from steve1_ray.progress import duration
from steve1_ray.runner import Job, run_job
from steve1_ray.world.config import WorldConfig

# ------------------------------------------------------------------------------- config

@dataclass
class EvalConfig:
    """One evaluation: which model, which goals and scales, how many episodes, where the report goes."""

    MOVED_KEYS: ClassVar[dict[str, str]] = {"backend": "world.backend",
                                            "env_kwargs": "world (world.zombie_rate=..., world.tree_logs=...)"}
    """keys of older configs and where they live now (named in the error instead of the list of known keys)"""

    policy: str = "debug"
    """Policy: a preset name (`debug`, `2x`), an original `.model` file, or one of our training
    checkpoint folders (`<ckpt>` holding `model/policy.model` + `model/steve1.weights`)."""
    weights: Optional[str] = None
    """Weights for a preset/.model policy (`steve1.weights`); ignored for checkpoint folders. None with a
    preset = random init seeded by `seed` (tests only)."""
    baseline_policy: Optional[str] = None
    """A second policy without goal training (VPT's role: a foundation model) that plays the unconditioned
    baseline's worlds with a zero goal, reported as its own row ("foundation") beside the unconditioned agent:
    a preset, a `.model` file or a checkpoint folder, like `policy`. Its weights may lack the goal layer
    (`net.mineclip_embed_linear`); the layer is then zero, so it acts exactly as trained. None = not played."""
    baseline_weights: Optional[str] = None
    """Weights for a preset/.model `baseline_policy` (e.g. `foundation.weights`); ignored for checkpoint folders."""
    embedder: str = "debug"
    """Goal embedder: MineCLIP `attn.pth`, one of our MineCLIP-layout checkpoints, or `debug` (the random
    debug MineCLIP the data pipeline uses with `mineclip_preset=debug` and no checkpoint)."""
    prior: Optional[str] = None
    """CVAE prior (`steve1_prior.pt` or ours) turning text embeddings into visual ones; None = use the
    text embedding as the goal (an embedder whose text and video spaces are aligned)."""
    prior_deterministic: bool = False
    """Decode the prior at z = 0 instead of one seeded sample per episode."""
    prompts: list[str] = field(default_factory=lambda: ["collect wood", "place a table"])
    """Text goals."""
    paraphrases: dict[str, list[str]] = field(default_factory=dict)
    """Other phrasings of a prompt, prompt -> [phrasing, ...]: each phrasing is a text goal of its own, played on the
    same worlds and scales and scored with the prompt's targets; the report puts its result beside the prompt's.
    Entries whose prompt is not in `prompts` are skipped (so `prompts=[...]` on the command line narrows both)."""
    visual_goals: dict[str, str] = field(default_factory=dict)
    """Visual goals, name -> file: an embedding (.npy/.pt, (D,)) or a clip (.mp4, or .npz with `frames`)
    whose last 16 frames are encoded (`clip.mp4@120`: the 16 frames before frame 120). The name looks
    up target achievements like a prompt (an achievement name as the name targets that achievement)."""
    prompt_achievements: dict[str, list[str]] = field(default_factory=dict)
    """Extra/overriding goal -> target achievements (merged over the built-in table)."""
    cond_scales: list[float] = field(default_factory=lambda: [0.0, 3.0, 6.0])
    """Guidance scales to sweep (0 = plain conditional policy; STEVE-1 uses 6 for text, 7 for visual)."""
    unconditioned: bool = True
    """Also run the baseline: zero goal, no guidance (the policy's unconditional behaviour)."""
    episodes: int = 8
    """Episodes per (goal, scale) cell, and for the baseline."""
    max_steps: int = 1000
    """Steps per episode (an episode also ends when the world says done, e.g. on death)."""
    world: WorldConfig = field(default_factory=WorldConfig)
    """The world every episode plays in (`world.backend=minerl` adds STEVE-1's paper metrics)."""
    seed: int = 0
    """Everything (worlds, prior samples, action sampling, CI bootstraps) derives from this."""
    deterministic: bool = False
    """Argmax actions instead of sampling."""
    workers: int = 2
    """Rollout actors."""
    streams_per_worker: int = 4
    """Episodes a worker plays at once, batched into one forward pass per step."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves for each rollout actor."""
    gpus_per_worker: float = 0.0
    """GPUs Ray reserves for each rollout actor; > 0 runs its policy on CUDA (when available)."""
    torch_threads: int = 1
    """torch intra-op threads per worker."""
    reuse_freed_memory: bool = True
    """Each worker keeps the memory a step frees for the next step instead of returning it to the OS (glibc
    tunables in its environment, steve1_ray/hostmem.py); false = glibc's defaults."""
    videos_per_cell: int = 1
    """Sample mp4s per (goal, scale) cell, with the prompt written over the frames (0 = none)."""
    video_height: int = 256
    """Height of the sample mp4s in pixels (the width keeps the world's aspect ratio)."""
    video_fps: int = 20
    """Frame rate of the sample mp4s (20 = real time: the worlds step 20 times per second)."""
    confidence: float = 0.95
    """Level of the report's confidence intervals (Wilson for success rates, bootstrap for means)."""
    out_dir: str = "runs/eval"
    """Report folder: report.md, summary.json, episodes.json, plots/, videos/ and config.yaml."""
    progress: bool = True
    """Progress lines with an ETA on stdout, and a tqdm bar over episode steps on stderr when it is a terminal."""
    report_only: bool = False
    """Play nothing: re-render report.md, summary.json and plots from `<out_dir>/episodes.json` (e.g.
    with another `confidence`)."""

    def __post_init__(self):
        check(self.episodes >= 1, f"episodes must be >= 1, got {self.episodes!r}")
        check(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps!r}")
        check(self.workers >= 1, f"workers must be >= 1, got {self.workers!r}")
        check(self.streams_per_worker >= 1, f"streams_per_worker must be >= 1, got {self.streams_per_worker!r}")
        check(0 < self.confidence < 1, f"confidence must be in (0, 1), got {self.confidence!r}")
        check(self.videos_per_cell >= 0, f"videos_per_cell must be >= 0, got {self.videos_per_cell!r}")
        check(self.video_height >= 32 and self.video_height % 2 == 0,
              f"video_height must be an even number >= 32, got {self.video_height!r}")
        check(self.cpus_per_worker > 0, f"cpus_per_worker must be > 0, got {self.cpus_per_worker!r}")
        check(bool(self.prompts or self.visual_goals or self.unconditioned or self.baseline_policy),
              "nothing to evaluate: give prompts=[...], visual_goals={...} or unconditioned=true")
        check(bool(self.cond_scales) or not (self.prompts or self.visual_goals),
              "cond_scales is empty; give at least one guidance scale, e.g. cond_scales=[6.0]")
        for s in self.cond_scales:
            check(isinstance(s, (int, float)) and math.isfinite(s) and s >= 0,
                  f"cond_scales must be finite numbers >= 0, got {s!r}")
        check(len(set(self.cond_scales)) == len(self.cond_scales), f"cond_scales has repeats: {self.cond_scales}")
        for prompt, phrasings in self.paraphrases.items():
            check(isinstance(phrasings, list) and all(isinstance(p, str) and p.strip() for p in phrasings),
                  f"paraphrases[{prompt!r}] must be a list of non-empty strings, got {phrasings!r}")
        names = list(self.prompts) + [p for _, p in self.phrasings()] + list(self.visual_goals)
        check(len(set(names)) == len(names), f"a goal is listed twice (prompts, paraphrases, visual_goals): {names}")
        for reserved in BASELINE_KINDS:
            check(reserved not in names, f"{reserved!r} is reserved for a baseline; rename that goal")
        check(self.baseline_weights is None or self.baseline_policy is not None,
              "baseline_weights is set but baseline_policy is not; give baseline_policy=<.model, preset or folder>")
        for p in self.prompts:
            check(isinstance(p, str) and p.strip() != "", f"prompts must be non-empty strings, got {p!r}")
        for goal, ach in self.prompt_achievements.items():
            check(isinstance(ach, list) and all(isinstance(a, str) for a in ach),
                  f"prompt_achievements[{goal!r}] must be a list of achievement names, got {ach!r}")

    def phrasings(self) -> list[tuple[str, str]]:
        """(prompt, other phrasing) pairs that are played: `paraphrases` of the prompts in `prompts`, in order."""
        return [(p, q) for p in self.prompts for q in self.paraphrases.get(p, [])]


BASELINE_KINDS = ("unconditioned", "foundation")
"""goal names (and kinds) of the two baselines: the evaluated policy with a zero goal, the foundation policy"""


# ------------------------------------------------------------------------------- planning

def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any printable parts (same parts, same seed, on every machine)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


def plan_jobs(cfg: EvalConfig) -> list[dict]:
    """Every episode to play, in report order: per goal (each prompt followed by its other phrasings), per scale,
    per episode; then the unconditioned baseline, then the foundation policy. A job's `policy` says which policy
    plays it ("policy" or "foundation"); `paraphrase_of` names the prompt a phrasing rephrases (else None).
    A phrasing's episodes take its prompt's goal and agent seeds (common random numbers): the prior draws the same
    noise for both wordings and the actions the same Gumbel noise, so a phrasing's cell differs from its prompt's
    only by what the words do, not by another draw of the dice."""
    jobs = []
    extra: dict[str, list[str]] = {}
    for prompt, phrasing in cfg.phrasings():
        extra.setdefault(prompt, []).append(phrasing)
    goals = [(g, "text", of) for p in cfg.prompts for g, of in [(p, None)] + [(q, p) for q in extra.get(p, [])]]
    goals += [(v, "visual", None) for v in cfg.visual_goals]
    cells = [(g, kind, float(s), of) for g, kind, of in goals for s in cfg.cond_scales]
    if cfg.unconditioned:
        cells.append(("unconditioned", "unconditioned", None, None))
    if cfg.baseline_policy is not None:
        cells.append(("foundation", "foundation", None, None))
    for goal, kind, scale, of in cells:
        targets = [] if kind in BASELINE_KINDS else targets_for(of or goal, cfg.prompt_achievements)
        seeded_as = of or goal  # a phrasing draws its prompt's noise: only the words differ from the prompt's cell
        for k in range(cfg.episodes):
            jobs.append({"goal": goal, "kind": kind, "cond_scale": scale, "episode": k,
                         "world_seed": derive_seed(cfg.seed, "world", k),
                         "goal_seed": derive_seed(cfg.seed, "goal", kind, seeded_as, k),
                         "agent_seed": derive_seed(cfg.seed, "agent", kind, seeded_as, scale, k),
                         "targets": targets, "paraphrase_of": of,
                         "policy": "foundation" if kind == "foundation" else "policy",
                         "video": k < cfg.videos_per_cell})
    return jobs


# ------------------------------------------------------------------------------- models

def load_eval_policy(cfg: EvalConfig):
    """The policy to evaluate, on CPU, in eval mode (a preset without weights: random, seeded by `cfg.seed`)."""
    from steve1_ray.models.loading import load_policy_spec

    return load_policy_spec(cfg.policy, cfg.weights, seed=cfg.seed)


def load_baseline_policy(cfg: EvalConfig):
    """The foundation policy (`cfg.baseline_policy`), or None. Weights without the goal layer load (a VPT-style
    file) with a zero goal layer (`load_policy_spec`), so the policy acts as it was trained."""
    from steve1_ray.models.loading import load_policy_spec

    if cfg.baseline_policy is None:
        return None
    return load_policy_spec(cfg.baseline_policy, cfg.baseline_weights, seed=derive_seed(cfg.seed, "foundation"))


def _load_clip(path: Path, end: int | None = None) -> np.ndarray:
    """The 16 frames ending before frame `end` (default: the clip's end) as (16, 160, 256, 3) uint8 RGB."""
    import cv2

    if path.suffix == ".npz":
        frames = np.load(path)["frames"][:end]
    else:
        import av

        window: deque = deque(maxlen=16)
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if end is not None and i >= end:
                    break
                window.append(frame.to_ndarray(format="rgb24"))
        frames = np.stack(window) if window else np.zeros((0,))
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 16:
        raise ConfigError(f"visual goal {path}: need at least 16 RGB frames before frame {end}, got an array of "
                          f"shape {frames.shape}")
    clip = [cv2.resize(np.asarray(f, np.uint8), (256, 160), interpolation=cv2.INTER_LINEAR) for f in frames[-16:]]
    return np.stack(clip)


def load_visual_goal(spec: str, embedder) -> np.ndarray:
    """A visual goal as a (D,) float32 embedding: stored (`.npy`/`.pt`) or encoded from a clip's 16 frames
    (`clip.mp4`, `clip.npz` with `frames`; `clip.mp4@120`: the 16 frames before frame 120)."""
    import torch

    path, _, end = spec.rpartition("@") if "@" in spec else (spec, "", "")
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"visual goal file {path!r} does not exist")
    if end and not (end.isdigit() and p.suffix in (".mp4", ".npz")):
        raise ConfigError(f"visual goal {spec!r}: '@<frame>' needs a clip (.mp4/.npz) and a frame number")
    if p.suffix == ".npy":
        emb = np.load(p)
    elif p.suffix in (".pt", ".pth"):
        emb = torch.load(p, map_location="cpu", weights_only=True)
        emb = emb.numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb)
    elif p.suffix in (".mp4", ".npz"):
        clip = _load_clip(p, int(end) if end else None)
        with torch.inference_mode():
            emb = embedder.encode_video(torch.from_numpy(clip)[None]).float().numpy()
    else:
        raise ConfigError(f"visual goal {spec!r}: use an embedding (.npy, .pt) or a clip (.mp4, .npz)")
    emb = np.asarray(emb, np.float32)
    if emb.ndim == 2 and emb.shape[0] == 1:
        emb = emb[0]
    if emb.ndim != 1:
        raise ConfigError(f"visual goal {spec!r}: expected one embedding of shape (D,), got {emb.shape}")
    return emb


def embed_goals(cfg: EvalConfig, jobs: list[dict], embed_dim: int, baseline_dim: int | None = None) -> None:
    """Fill every job's `goal_embed` ((D,) float32) in place; the checks name the mismatch. The baselines get
    zeros (`baseline_dim` wide for the foundation policy; default `embed_dim`)."""
    import torch

    goal_jobs = [j for j in jobs if j["kind"] not in BASELINE_KINDS]
    for j in jobs:
        if j["kind"] in BASELINE_KINDS:
            dim = baseline_dim if j["kind"] == "foundation" and baseline_dim else embed_dim
            j["goal_embed"] = np.zeros(dim, np.float32)
    if not goal_jobs:
        return
    from steve1_ray.models.loading import load_goal_models

    embedder, prior = load_goal_models(cfg.embedder, cfg.prior)  # no prior: goals are the text embeddings
    with torch.inference_mode():
        texts = list(cfg.prompts) + [q for _, q in cfg.phrasings()]
        text_embeds = dict(zip(texts, embedder.encode_text(texts).float().numpy())) if texts else {}
        visual = {name: load_visual_goal(path, embedder) for name, path in cfg.visual_goals.items()}
        for j in goal_jobs:
            if j["kind"] == "visual":
                emb = visual[j["goal"]]
            elif prior is None:
                emb = text_embeds[j["goal"]]
            else:
                text = torch.from_numpy(text_embeds[j["goal"]])[None]
                emb = prior.sample(text, seed=j["goal_seed"], deterministic=cfg.prior_deterministic)
                emb = emb.float().numpy().reshape(-1)
            emb = np.asarray(emb, np.float32).reshape(-1)
            if emb.size != embed_dim:
                raise ConfigError(f"goal {j['goal']!r}: the embedder/prior give {emb.size}-dim goals but the "
                                  f"policy expects {embed_dim}; use the embedder the policy was trained with")
            j["goal_embed"] = emb


# ------------------------------------------------------------------------------- rollouts

@dataclass
class _Slot:
    job: dict
    env: Any
    stream: Any
    tracker: Any
    obs: dict
    video: Any  # steve1_ray.world.video.Mp4Writer or None
    label: str
    t0: float
    steps: int = 0


def _record(job: dict, steps: int, died: bool, metrics: dict, seconds: float, error: str | None = None) -> dict:
    rec = {k: job[k] for k in ("goal", "kind", "cond_scale", "episode", "world_seed", "goal_seed", "agent_seed",
                               "targets")}
    if job.get("paraphrase_of"):
        rec["paraphrase_of"] = job["paraphrase_of"]
    rec.update(steps=steps, died=died, metrics=metrics, video=None, seconds=round(seconds, 3))
    if error:
        rec["error"] = error
    else:  # the kernels the process that played it ran (`steve1_ray.numerics`): the report names them
        import torch

        rec["cpu_kernels"] = torch.backends.cpu.get_cpu_capability()
    return rec


def _kernels(episodes: Sequence[dict]) -> list[str]:
    """The CPU kernels the episodes were played with (two where workers differed; none in older evaluations)."""
    return sorted({e["cpu_kernels"] for e in episodes if e.get("cpu_kernels")})


def _failed(jobs: Sequence[dict], error: str) -> list[tuple[dict, None]]:
    return [(_record(j, 0, False, {}, 0.0, error), None) for j in jobs]


def play_episodes(policy, envs: Sequence, jobs: Sequence[dict], max_steps: int, paper_metrics: bool = False,
                  deterministic: bool = False, video_height: int = 256, video_fps: int = 20,
                  on_step: Callable[[int], None] | None = None) -> list[tuple[dict, bytes | None]]:
    """Play `jobs` (one per env, at most len(envs)) to the end in lockstep; one forward per step for all.

    Returns (record, mp4 bytes or None) per job, in order. A world that raises ends only its own
    episode (the record carries `error`); the others play on. `on_step(n)` is told after every
    lockstep step how many episode steps it made (for progress bars).
    """
    from steve1_ray.agent import act_batch, new_stream
    from steve1_ray.evaluate.metrics import MetricTracker

    if any(job.get("video") for job in jobs):
        from steve1_ray.world.video import Mp4Writer, draw_prompt

    if len(jobs) > len(envs):
        raise ValueError(f"{len(jobs)} jobs but only {len(envs)} worlds")
    results: list[Optional[tuple[dict, bytes | None]]] = [None] * len(jobs)
    slots: list[tuple[int, _Slot]] = []
    for i, (job, env) in enumerate(zip(jobs, envs)):
        t0 = time.perf_counter()
        try:
            obs = env.reset(seed=job["world_seed"])
        except Exception as exc:  # noqa: BLE001 - one bad world must not end the evaluation
            results[i] = (_record(job, 0, False, {}, 0.0, f"reset failed: {exc!r}"), None)
            continue
        scale = job["cond_scale"]
        stream = new_stream(policy, job["goal_embed"], None if not scale else scale, seed=job["agent_seed"],
                            deterministic=deterministic)  # scale 0 == plain conditional: one row suffices
        video, label = None, ""
        if job.get("video"):
            how = "no goal" if job["kind"] in BASELINE_KINDS else f"scale {scale:g}"
            label = f"{job['goal']} ({how}, ep {job['episode']})"
            video = Mp4Writer(fps=video_fps, height=video_height, crf=26, preset="ultrafast")
            video.add(draw_prompt(obs["pov"], label, 0))
        slots.append((i, _Slot(job, env, stream, MetricTracker(job["targets"], paper_metrics), obs, video,
                               label, t0)))

    while slots:
        actions = act_batch(policy, [s.stream for _, s in slots], [s.obs["pov"] for _, s in slots])
        still = []
        for (i, s), action in zip(slots, actions):
            error, done, info = None, False, {}
            try:
                s.obs, _, done, info = s.env.step(action)
                s.steps += 1
                s.tracker.update(info)
                if s.video is not None:
                    s.video.add(draw_prompt(s.obs["pov"], s.label, s.steps))
            except Exception as exc:  # noqa: BLE001
                error, done = f"step {s.steps + 1} failed: {exc!r}", True
            if done or s.steps >= max_steps:
                mp4 = s.video.finish() if s.video is not None else None
                # Died: the world ended the episode with discount 0 (crafter), or early without saying why.
                died = bool(done and error is None and float(info.get("discount", 0.0)) == 0.0)
                results[i] = (_record(s.job, s.steps, died, s.tracker.result(),
                                      time.perf_counter() - s.t0, error), mp4 or None)
            else:
                still.append((i, s))
        if on_step is not None:
            on_step(len(slots))
        slots = still
    return results  # type: ignore[return-value]


class EvalWorker:
    """A rollout actor: the policy (and the foundation policy), built from shipped configs + state dicts, and a few
    worlds. A chunk of jobs is played by the policy its jobs name (`job["policy"]`, one per chunk)."""

    def __init__(self, policy_cfg, state_dict, cfg_dict: dict, baseline_cfg=None, baseline_state=None):
        import torch

        from steve1_ray.models.policy import Steve1Policy
        self.cfg = from_dict(EvalConfig, cfg_dict)
        torch.set_num_threads(self.cfg.torch_threads)
        device = "cuda" if self.cfg.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu"
        self.policies = {}
        for name, pcfg, sd in (("policy", policy_cfg, state_dict), ("foundation", baseline_cfg, baseline_state)):
            if pcfg is not None:
                policy = Steve1Policy(pcfg)
                policy.load_state_dict(sd, strict=True)
                self.policies[name] = policy.to(device).eval()
        self.envs = [self.cfg.world.make() for _ in range(self.cfg.streams_per_worker)]
        self.steps = 0  # episode steps played in the current chunk; read by `progress` from another thread

    def run(self, jobs: list[dict]) -> list[tuple[dict, bytes | None]]:
        self.steps = 0

        def count(n: int) -> None:
            self.steps += n

        try:
            return play_episodes(self.policies[jobs[0].get("policy", "policy")], self.envs, jobs, self.cfg.max_steps,
                                 paper_metrics=self.cfg.world.backend == "minerl",
                                 deterministic=self.cfg.deterministic, video_height=self.cfg.video_height,
                                 video_fps=self.cfg.video_fps, on_step=count)
        except Exception as exc:  # noqa: BLE001 - report, keep the actor for the next chunk
            return _failed(jobs, f"rollout failed: {exc!r}")

    def progress(self) -> int:
        return self.steps


def _why(exc: BaseException) -> str:
    """The line of a Ray error that says what went wrong (`ValueError: ...`), not Ray's preamble."""
    import re

    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    causes = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b.*: ", ln) and "ray." not in ln.split(":")[0]]
    return (causes[-1] if causes else lines[0] if lines else type(exc).__name__)[:400]


class ProgressLines:
    """Plain progress lines for the job's own stdout (the tqdm bar goes to stderr and Ray's worker logs may not
    reach the driver): episodes done of all, share of the steps, elapsed time and an ETA, printed each time
    another `every` of the steps is done or `interval_s` has passed since the last line, whichever comes first."""

    def __init__(self, total_episodes: int, every: float = 0.1, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, prefix: str = "[evaluate]"):
        self.total, self.every, self.interval_s = total_episodes, every, interval_s
        self.clock, self.prefix = clock, prefix
        self.t0 = self.last = clock()
        self.next_fraction = every

    def update(self, episodes_done: int, fraction: float, failed: int = 0) -> str | None:
        """The line to print now (None when none is due): `fraction` is the share of all steps played so far."""
        now = self.clock()
        if fraction < self.next_fraction and now - self.last < self.interval_s:
            return None
        while self.next_fraction <= fraction:
            self.next_fraction += self.every
        self.last = now
        elapsed = now - self.t0
        eta = duration(elapsed * (1 - fraction) / fraction) if fraction > 0 else "?"
        bad = f" ({failed} failed)" if failed else ""
        return (f"{self.prefix} {episodes_done}/{self.total} episodes done{bad}, {fraction:.0%} of the steps, "
                f"{duration(elapsed)} elapsed, ETA {eta}")

    def finish(self, episodes_done: int, failed: int = 0) -> str:
        bad = f", {failed} failed" if failed else ""
        return f"{self.prefix} {episodes_done}/{self.total} episodes done{bad} in {duration(self.clock() - self.t0)}"


def chunk_jobs(jobs: Sequence[dict], size: int) -> list[list[dict]]:
    """Consecutive jobs in chunks of at most `size`, a chunk never mixing policies (a worker plays a chunk in one
    batched forward pass of one policy)."""
    chunks: list[list[dict]] = []
    for job in jobs:
        if chunks and len(chunks[-1]) < size and chunks[-1][0].get("policy") == job.get("policy"):
            chunks[-1].append(job)
        else:
            chunks.append([job])
    return chunks


def _bar_wanted(cfg: EvalConfig) -> bool:
    """The tqdm bar only where a person watches stderr: redrawn with '\\r' into a log file or a pipe (the quick
    start's output) it is one endless line; the progress lines say the same there."""
    return bool(cfg.progress) and sys.stderr.isatty()


def run_rollouts(cfg: EvalConfig, policy, jobs: list[dict], baseline=None) -> list[tuple[dict, bytes | None]]:
    """Play every job on `cfg.workers` Ray actors, `streams_per_worker` episodes per call (`baseline`: the
    foundation policy, for the jobs with `policy: foundation`).

    The progress bar (stderr) counts episode steps (each episode counts `max_steps`, so the bar ends at 100 %
    even when episodes end early) and shows finished and failed episodes; with `cfg.progress`, `ProgressLines`
    also prints a line with the ETA to stdout every 10 % of the steps (or minute).
    """
    import ray
    from tqdm import tqdm

    chunks = chunk_jobs(jobs, cfg.streams_per_worker)
    n_workers = min(cfg.workers, len(chunks))
    cfg_dict = to_dict(cfg)

    def shipped(p):
        return ray.put({k: v.cpu() for k, v in p.state_dict().items()})

    policy_ref = shipped(policy)
    base_cfg, base_ref = (baseline.cfg, shipped(baseline)) if baseline is not None else (None, None)
    Worker = ray.remote(max_concurrency=2)(EvalWorker)  # a second thread answers progress() during run()
    env = {"runtime_env": runtime_env()} if cfg.reuse_freed_memory else {}
    actors = [Worker.options(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker, **env)
              .remote(policy.cfg, policy_ref, cfg_dict, base_cfg, base_ref) for _ in range(n_workers)]
    queue = deque(range(len(chunks)))
    results: dict[int, list] = {}
    pending: dict[Any, tuple[Any, int]] = {}

    def submit(actor) -> None:
        if queue:
            c = queue.popleft()
            pending[actor.run.remote(chunks[c])] = (actor, c)

    for actor in actors:
        submit(actor)
    bar = tqdm(total=len(jobs) * cfg.max_steps, desc="evaluate", unit="step", disable=not _bar_wanted(cfg),
               file=sys.stderr, smoothing=0.1)
    lines = ProgressLines(len(jobs))
    done_steps = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
        for ref in ready:
            actor, c = pending.pop(ref)
            try:
                results[c] = ray.get(ref)
                submit(actor)
            except ray.exceptions.RayActorError as exc:  # the actor died: its chunk is lost, the others go on
                results[c] = _failed(chunks[c], f"worker died: {_why(exc)}")
            except ray.exceptions.RayTaskError as exc:
                results[c] = _failed(chunks[c], f"worker failed: {_why(exc)}")
                submit(actor)
            done_steps += len(chunks[c]) * cfg.max_steps
        if not pending and queue:  # no worker left alive to take the rest
            while queue:
                r = queue.popleft()
                results[r] = _failed(chunks[r], "not run: every worker died")
        running = 0
        if cfg.progress and pending:
            try:
                running = sum(ray.get([a.progress.remote() for a, _ in pending.values()], timeout=5.0))
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError):
                running = 0
        n = min(bar.total, done_steps + running)
        ok = sum(1 for rs in results.values() for r, _ in rs if "error" not in r)
        failed = sum(len(rs) for rs in results.values()) - ok
        if n != bar.n or ready:  # redraw only on news (logs of `ray job` keep every redraw)
            bar.n = n
            bar.set_postfix(episodes=ok, failed=failed, refresh=False)
            bar.refresh()
        line = lines.update(ok + failed, n / max(1, bar.total), failed) if cfg.progress and pending else None
        if line:
            print(line, flush=True)
    bar.close()
    if cfg.progress:
        ok = sum(1 for rs in results.values() for r, _ in rs if "error" not in r)
        print(lines.finish(sum(len(rs) for rs in results.values()), sum(len(rs) for rs in results.values()) - ok),
              flush=True)
    for actor in actors:
        ray.kill(actor)
    return [r for c in range(len(chunks)) for r in results[c]]


# ------------------------------------------------------------------------------- the job

def run_evaluation(cfg: EvalConfig) -> Path:
    """Plan, embed goals, play every episode on Ray, write the report folder; returns report.md's path."""
    from steve1_ray.agent import policy_embed_dim
    from steve1_ray.evaluate.report import slug, write_report

    t0 = time.time()
    out = Path(cfg.out_dir)
    if cfg.report_only:
        return rerender_report(out, cfg.confidence, cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    policy = load_eval_policy(cfg)
    baseline = load_baseline_policy(cfg)
    jobs = plan_jobs(cfg)
    embed_goals(cfg, jobs, policy_embed_dim(policy), policy_embed_dim(baseline) if baseline is not None else None)
    print(plan_line(cfg, jobs), flush=True)
    skipped = [p for p in cfg.paraphrases if p not in cfg.prompts]
    if skipped:
        print(f"[evaluate] paraphrases of prompts not in prompts= are skipped: {skipped}", flush=True)
    connect(log_to_driver=False, include_dashboard=False)
    played = run_rollouts(cfg, policy, jobs, baseline)

    (out / "videos").mkdir(exist_ok=True)
    stems: dict[tuple[str, str], str] = {}  # (goal, kind) -> unique file stem
    for job in jobs:
        base = slug(job["goal"]) + ("_visual" if job["kind"] == "visual" else "")
        stem, i = base, 1
        while (job["goal"], job["kind"]) not in stems and stem in stems.values():
            i += 1
            stem = f"{base}_{i}"
        stems.setdefault((job["goal"], job["kind"]), stem)
    episodes, failed = [], []
    for rec, mp4 in played:
        if "error" in rec:
            failed.append(rec)
            continue
        if mp4:
            scale = "uncond" if rec["cond_scale"] is None else f"s{rec['cond_scale']:g}"
            name = f"videos/{stems[(rec['goal'], rec['kind'])]}_{scale}_ep{rec['episode']}.mp4"
            (out / name).write_bytes(mp4)
            rec["video"] = name
        episodes.append(rec)
    (out / "failed.json").write_text(json.dumps(failed, indent=1))
    if not episodes:
        first = failed[0]["error"] if failed else "no episodes were planned"
        raise RuntimeError(f"every episode failed (see {out / 'failed.json'}); the first error: {first}")
    wall = time.time() - t0
    steps = sum(e["steps"] for e in episodes)
    kernels = _kernels(episodes)
    foundation = ""
    if baseline is not None:
        loaded = getattr(baseline, "load_report", None)
        foundation = (f"; foundation policy `{cfg.baseline_policy}`"
                      + (f", weights `{cfg.baseline_weights}`" if cfg.baseline_weights else "")
                      + (" (no goal layer)" if loaded is not None and loaded.missing_goal_layer else ""))
    header = [f"- policy: `{cfg.policy}`" + (f", weights `{cfg.weights}`" if cfg.weights else "") + foundation,
              f"- goals: embedder `{cfg.embedder}`, prior `{cfg.prior}`; world `{cfg.world.backend}`; "
              f"{cfg.episodes} episodes per cell, at most {cfg.max_steps} steps; seed {cfg.seed}",
              f"- {len(episodes)} episodes, {steps} steps in {wall:.0f} s "
              f"({steps / max(wall, 1e-9):.0f} steps/s) on {cfg.workers} workers"
              + (f", CPU kernels {' + '.join(kernels)}" if kernels else "")
              + (f"; **{len(failed)} episodes failed**, see failed.json" if failed else "")]
    report = write_report(episodes, out, cfg.confidence, cfg.seed, header_lines=header)
    return report


def plan_line(cfg: EvalConfig, jobs: Sequence[dict]) -> str:
    """One line saying what will be played: goals x scales + baselines, worlds, steps, workers."""
    parts = []
    if cfg.prompts:
        n = len(cfg.phrasings())
        parts.append(f"{len(cfg.prompts)} prompts" + (f" + {n} other phrasings" if n else ""))
    if cfg.visual_goals:
        parts.append(f"{len(cfg.visual_goals)} visual goals")
    what = " + ".join(parts)
    if what:
        what += f" x {len(cfg.cond_scales)} scales ({', '.join(f'{s:g}' for s in cfg.cond_scales)})"
    extra = [k for k in BASELINE_KINDS if any(j["kind"] == k for j in jobs)]
    what = ", ".join([w for w in [what] if w] + extra)
    return (f"[evaluate] {len(jobs)} episodes: {what}; {cfg.episodes} worlds each, at most {cfg.max_steps} steps; "
            f"{cfg.workers} workers x {cfg.streams_per_worker} streams")


def rerender_report(out: Path, confidence: float = 0.95, seed: int = 0) -> Path:
    """report.md, summary.json and plots again from `out/episodes.json` (JSON nulls back to NaN)."""
    from steve1_ray.evaluate.report import write_report

    path = out / "episodes.json"
    if not path.is_file():
        raise ConfigError(f"report_only=true but {path} does not exist; point out_dir= at an evaluation's folder")
    episodes = json.loads(path.read_text())
    for ep in episodes:
        ep["metrics"] = {k: math.nan if v is None else v for k, v in ep["metrics"].items()}
    kernels = _kernels(episodes)
    header = [f"- re-rendered from episodes.json ({len(episodes)} episodes), confidence {confidence:g}"
              + (f"; played with CPU kernels {' + '.join(kernels)}" if kernels else "")]
    return write_report(episodes, out, confidence, seed, header_lines=header)


def _run(cfg: EvalConfig) -> int:
    try:
        report = run_evaluation(cfg)
    except RuntimeError as exc:  # every episode failed
        print(f"steve1 evaluate: {exc}", file=sys.stderr)
        return 1
    print(f"report: {report}", flush=True)
    return 0


JOB = Job("evaluate", EvalConfig, _run, presets="eval", errors=(FileNotFoundError, ValueError),
          summary="Programmatic evaluation: prompts (and other phrasings) x guidance scales, the unconditioned "
                  "agent and a foundation policy on the same worlds -> a report folder (config.yaml, report.md "
                  "opening with whether each prompt is followed, plots, videos); exit 1 if every episode failed.",
          examples="""
          steve1 evaluate --config crafter policy=runs/train/policy/checkpoint_000003 embedder=data/embedder/mineclip.pth
          steve1 evaluate --config debug episodes=4 'prompts=[collect wood, drink water]' cond_scales=[0,6]""")


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(JOB, argv)


if __name__ == "__main__":
    # `python -m steve1_ray.evaluate.run`: run the imported module, whose classes Ray ships by reference (this
    # __main__ copy's dataclasses fail to unpickle in the workers: NameError ClassVar)
    from steve1_ray.evaluate.run import main as _main

    sys.exit(_main())
