"""`steve1 quickstart`: STEVE-1's fine-tuning scenario on the embedded world (crafter), on one machine.

    record fresh episodes → dataset (embedded with the released world embedder) → fine-tune the released STEVE-1
    policy on them (hindsight relabeling, p_uncond, event goals) → serve → play a prompt over HTTP
    → evaluate the five prompts against the unconditioned agent and the foundation policy → print where it is

The released files (`steve1 release-world`: foundation policy, STEVE-1 policy, world embedder, prior) play the
roles of VPT's foundation model, the released STEVE-1, MineCLIP and STEVE-1's prior (a release without a STEVE-1
policy: the fine-tune starts from the foundation, STEVE-1's own fine-tune). `from_scratch=true` runs the whole pipeline instead: record →
train the world embedder → dataset → train the policy → (event-goal fine-tune) → train the prior → serve → play →
evaluate. Every stage runs the same job a user would run by hand (`steve1 record ...`), on one local Ray
cluster; the commands are printed as they run, so each stage can be re-run or scaled up alone. Outputs go under
`out` (default `runs/quickstart`). Stages whose outputs exist are skipped on a re-run (`fresh=true` starts over).
Times on 2 idle CPU cores: benchmarks/RESULTS.md; `tiny=true` shrinks every stage for a smoke test.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

import yaml

from steve1_ray.cluster import connect
from steve1_ray.config import check, save_config, to_dict
from steve1_ray.models.loading import (RELEASE_STEVE1, latest_checkpoint, released_policy_model,
                                       released_policy_weights)
from steve1_ray.numerics import CPU_ISAS, DEFAULT_CPU_ISA, CpuIsaError, pin_cpu_isa
from steve1_ray.runner import Job, run_job
from steve1_ray.progress import duration
from steve1_ray.stages import Stages, dataset_stages
from steve1_ray.world.config import WorldConfig, recorded_world, world_override

_REPO = Path(__file__).resolve().parents[1]
FIVE_PROMPTS = ["chop a tree", "collect a sapling", "drink water", "eat a cow", "place a crafting table"]
FIVE_GOALS = ["collect_wood", "collect_sapling", "collect_drink", "eat_cow", "place_table"]


@dataclass
class QuickstartConfig:
    """Budget of each stage of the quick start."""

    MOVED_KEYS: ClassVar[dict[str, str]] = {"tree_logs": "world.tree_logs"}
    """keys of older configs and where they live now (named in the error instead of the list of known keys)"""

    out: str = "runs/quickstart"
    """everything is written under this folder"""
    from_scratch: bool = False
    """train everything here (embedder, policy, prior) instead of fine-tuning from the released world models"""
    release: str = ""
    """the released world models to fine-tune from (foundation and STEVE-1 policies, embedder, prior); default: the committed
    `steve1_ray/released/world` (`steve1 release-world`)"""
    episodes: int = 24
    """embedded-world episodes recorded by the scripted demonstrators (world seeds 0.., the release's are 100000..)"""
    max_steps: int = 600
    """frames per episode at most (20 per second)"""
    focus_goals: list[str] = field(default_factory=lambda: list(FIVE_GOALS))
    """fine-tune: the recording's task episodes each prefer one of these goals, in turn (`steve1 record
    focus_order=cycle`), so the fine-tune's data is about what the evaluation asks for, as a user records the
    tasks they care about; from_scratch keeps the recorder's defaults (tasks drawn at random among more goals)"""
    focus_fraction: float = 0.75
    """fine-tune: share of the recorded episodes that are tasks (the rest is free play)"""
    appetite: str = "eager"
    """the demonstrators' appetite (`steve1 record appetite=`): eager = they drink, hunt and chop whenever they
    can; needs = mostly when their needs call for it, which makes a task stand out from free play 3.7-12x
    instead of 2.7-5.8x (benchmarks/demo_contrast.py)"""
    stop_at_full: bool = False
    """the demonstrators' gathering goals other than the episode's task end once what they fill is full (`steve1
    record stop_at_full=`, docs/world.md): only the task drinks or chops at a full level"""
    free_play: bool = False
    """fine-tune: only the recording's free-play episodes meet the zero goal (`steve1 train free_play=<the
    recording>`, docs/training.md), on a `p_uncond` share of all sequences as before: the unconditioned agent,
    the evaluation's baseline, learns play without a task instead of the recording's mix of tasks"""
    world: WorldConfig = field(default_factory=lambda: WorldConfig(tree_logs=4))
    """the embedded world; recording, serving's rollouts and the evaluation all play in it (trees give 4 logs, as
    in the release's world, docs/world.md)"""
    finetune_frames: int = 49152
    """fine-tuning frames from the released STEVE-1 policy (`steve1.weights`; a release without one: from its
    foundation policy), on event goals (goal_event_horizon=`event_horizon`, pick last)"""
    finetune_lr: Optional[float] = None
    """learning rate of that fine-tune; None = 3e-4 from the released STEVE-1 policy (its event stage's), 1e-3 from
    a foundation policy"""
    goal_lr_scale: Optional[float] = None
    """the fine-tune's learning rate of the goal layer is `finetune_lr` times this; None = 1 from the released
    STEVE-1 policy, 10 from a foundation policy (its goal layer starts at zero: 10 doubles goal use per frame of
    fine-tuning, benchmarks/RESULTS.md session 12)"""
    segment_goals: bool = True
    """fine-tune: condition every frame of a demonstrator's reached segment on the clip that ends it (`steve1
    train goal_segments=<the recording>`, docs/training.md), over the event goals; false = event goals alone (the
    default before session 24)"""
    event_horizon: int = 40
    """fine-tune: a frame at most this many frames before an event (an achievement) is conditioned on the clip of
    the farthest such event (`steve1 train goal_event_horizon= goal_event_pick=last`)"""
    embedder_epochs: int = 8
    """from_scratch: epochs of the world embedder's contrastive training (`steve1 train-embedder epochs=`)"""
    policy_frames: int = 8192
    """from_scratch: behaviour-cloning frames (the debug policy preset)"""
    event_frames: int = 0
    """from_scratch: then fine-tune the policy this many frames on event goals (goal_event_horizon=40,
    goal_event_pick=last, lr 3e-4; docs/training.md), and serve and evaluate the fine-tuned policy; 0 = none"""
    prior_epochs: int = 50
    """from_scratch: epochs of the prior's training (`steve1 train-prior epochs=`; the original's 50)"""
    prompt: str = "collect a sapling"
    """the prompt played through the server (its rollout video is what a newcomer watches first): one the default
    quick start follows in every measurement so far, 13-160x the unconditioned agent's saplings
    (benchmarks/RESULTS.md, sessions 26-39); "chop a tree" at one seed of four in session 39 (issue 22)"""
    cond_scale: float = 2.0
    """guidance scale of the played prompt (0 = the plain conditional policy): one the evaluation sweeps, so the
    video shows a cell of the report (STEVE-1's 6 for text is too strong for the embedded world's policy, see
    `eval_scales`)"""
    play_steps: int = 200
    """steps of the rollout played through the server (20 per second)"""
    eval_prompts: list[str] = field(default_factory=lambda: list(FIVE_PROMPTS))
    """text goals of the evaluation (captions the embedded world's demonstrators use)"""
    eval_scales: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0])
    """guidance scales the evaluation sweeps (0 = the plain conditional policy; those of `steve1 evaluate --config
    crafter`); the unconditioned agent (and the foundation policy, when fine-tuning) always play the same worlds
    too. 1 and 2, not STEVE-1's 6: on this policy 6 was best for nothing but a sapling phrasing (by < 0.1 per
    episode), cuts the tree by a third and collapses the table (benchmarks/RESULTS.md, session 39)"""
    eval_episodes: int = 24
    """evaluation episodes (worlds) per (prompt, scale) cell and for each baseline. 24: a cow or a table is 0-2 per
    episode, so at 12 worlds one seed's verdict could flip on a single lucky episode (the committed release's quick
    start: "eat a cow" followed at seed 2 of three on 12 worlds, 2.8x; on 24 worlds 2.4x but not above scale 0 at seed
    0 and 1.2x at seed 1; benchmarks/RESULTS.md, session 30). 24 costs 1.5-3 minutes more (the evaluation 4m32s and
    6m02s against 3m08s)"""
    eval_steps: int = 300
    """steps per evaluation episode at most (20 per second)"""
    eval_seed: int = 0
    """the evaluation's seed (its worlds and the prior's samples); re-run `steve1 evaluate seed=1` to check"""
    port: int = 8000
    """HTTP port the served app listens on (http://127.0.0.1:<port>)"""
    cpu_isa: str = DEFAULT_CPU_ISA
    """the CPU kernels every stage runs (`steve1_ray.numerics`): `avx2` pins torch's, MKL's and oneDNN's to AVX2, the
    kernels the committed release was made with, so that an AVX-512 machine rounds as an AVX2 one does (with its own
    AVX-512 kernels the release's embedder, re-run, diverged from its first epoch: benchmarks/RESULTS.md, session
    41); a CPU without AVX2 runs its own and says so; "" = the machine's own. A folder resumes only with the setting
    it was made with. Each stage's job gets the same setting; every `steve1` job run alone pins AVX2 by default too,
    so a stage re-run alone computes what it computed here"""
    tiny: bool = False
    """smallest settings everywhere (the smoke test of the quick start)"""
    fresh: bool = False
    """delete `out` first"""
    keep_serving: bool = False
    """leave the server running at the end (Ctrl-C to stop)"""

    def __post_init__(self):
        check(self.episodes >= 2, f"episodes={self.episodes!r}: need at least 2 (one is held out for validation)")
        check(self.max_steps >= 64, f"max_steps={self.max_steps!r}: episodes need at least 64 frames")
        check(self.world.backend == "crafter",
              f"world.backend={self.world.backend!r}: the quick start records with crafter's scripted demonstrators")
        check(self.event_frames >= 0, f"event_frames={self.event_frames!r} must be >= 0 (0 = no fine-tune)")
        check(self.finetune_frames > 0, f"finetune_frames={self.finetune_frames!r} must be > 0")
        check(0.0 <= self.focus_fraction <= 1.0, f"focus_fraction={self.focus_fraction!r} must be in [0, 1]")
        check(self.appetite in ("eager", "needs"), f"appetite={self.appetite!r}: choose eager or needs")
        check(self.cpu_isa in CPU_ISAS, f"cpu_isa={self.cpu_isa!r}: choose one of {list(CPU_ISAS)}")
        check(self.goal_lr_scale is None or self.goal_lr_scale > 0, f"goal_lr_scale={self.goal_lr_scale!r} must be > 0")
        check(self.finetune_lr is None or self.finetune_lr > 0, f"finetune_lr={self.finetune_lr!r} must be > 0")
        check(self.event_horizon >= 0, f"event_horizon={self.event_horizon!r} must be >= 0 (0 = spaced goals only)")
        check(self.eval_episodes >= 1, f"eval_episodes={self.eval_episodes!r} must be >= 1")
        check(math.isfinite(self.cond_scale) and self.cond_scale >= 0,
              f"cond_scale={self.cond_scale!r} must be a finite number >= 0 (0 = the plain conditional policy)")
        if self.tiny:
            self.episodes, self.max_steps, self.embedder_epochs = 3, 160, 1
            self.policy_frames, self.prior_epochs, self.play_steps = 1024, 2, 20
            self.finetune_frames = min(self.finetune_frames, 1024)
            # the played prompt, so the one rollout a newcomer watches is the one the report judges
            self.eval_prompts = [self.prompt] if self.prompt in self.eval_prompts else self.eval_prompts[:1]
            self.eval_scales = list(dict.fromkeys([0.0, self.cond_scale]))
            self.eval_episodes, self.eval_steps = 1, 20
            self.event_frames = min(self.event_frames, 512)


def _play_prompt(cfg: QuickstartConfig, out: Path) -> dict:
    """Play the prompt through the server (`steve1_ray.client`): start a rollout, poll it, save the mp4 and
    the metrics."""
    from steve1_ray.client import ApiError, Client

    api = Client(f"http://127.0.0.1:{cfg.port}", timeout=60)
    try:
        rollout = api.rollout(cfg.prompt, steps=cfg.play_steps, cond_scale=cfg.cond_scale, world_seed=1,
                              policy_seed=1, wait=False)
        rollout.wait(poll_s=2, timeout_s=600, on_poll=lambda st: print(
            f"    rollout {rollout.id}: {st.get('status')} step {st.get('step', 0)}/{cfg.play_steps}", flush=True))
        video, metrics = rollout.video(), rollout.metrics()
    except (ApiError, TimeoutError) as e:
        raise SystemExit(f"quickstart: the rollout did not finish: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "rollout.mp4").write_bytes(video)
    (out / "rollout_metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def _release(cfg: QuickstartConfig) -> Path:
    """The released world models to fine-tune from, checked against their manifest (and the world)."""
    from steve1_ray.release import released_world, verify

    try:
        root = Path(cfg.release) if cfg.release else released_world()
        manifest = verify(root)
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise SystemExit(f"quickstart: {e} (or run `steve1 quickstart from_scratch=true`)") from None
    if recorded_world(manifest["world"]) != to_dict(cfg.world):
        print(f"quickstart: note: the released models were trained in world {manifest['world']}; this run plays "
              f"in {to_dict(cfg.world)}", flush=True)
    return root


def finetune_plan(cfg: QuickstartConfig, release: Path) -> tuple[str, float, float]:
    """(release file to fine-tune, lr, goal_lr_scale): the release's STEVE-1 policy when its manifest lists one
    (3e-4, 1: its event stage's rate, the goal layer already trained), else its foundation (1e-3, 10: the goal
    layer starts at zero, RESULTS session 12); `finetune_lr` / `goal_lr_scale` override."""
    weights = released_policy_weights(release)
    default_lr, default_scale = (3e-4, 1.0) if weights == RELEASE_STEVE1 else (1e-3, 10.0)
    return (weights, default_lr if cfg.finetune_lr is None else cfg.finetune_lr,
            default_scale if cfg.goal_lr_scale is None else cfg.goal_lr_scale)


def _record_dataset(st: Stages, cfg: QuickstartConfig, world_arg: str, embedder: Path,
                    train_embedder: bool) -> tuple[Path, Path, Path]:
    """record → (train the world embedder) → dataset → sampling; returns (recordings, shards, samplings)."""
    world, shards, samplings = st.path("world"), st.path("shards"), st.path("samplings")
    st.run("record embedded-world episodes", "record", "steve1_ray.world.record",
           [f"out={world}", f"episodes={cfg.episodes}", f"max_steps={cfg.max_steps}", "seed=0", world_arg,
            f"appetite={cfg.appetite}"] + (["stop_at_full=true"] if cfg.stop_at_full else [])
           + ([] if train_embedder else ["focus_goals=" + json.dumps(cfg.focus_goals), "focus_order=cycle",
                                          f"focus_fraction={cfg.focus_fraction}"]),
           done=world / "summary.json")
    if train_embedder:
        st.run("train the world embedder (MineCLIP architecture, contrastive)", "train-embedder",
               "steve1_ray.train.embedder", ["--config", "world", f"recordings={world}", f"out={embedder.parent}",
                                             f"epochs={cfg.embedder_epochs}"],
               done=embedder.parent / "metrics.json")  # written after mineclip.pth
    dataset_stages(st, world, embedder, shards, samplings, "quickstart", val_share=6)
    return world, shards, samplings


def _train_args(shards: Path, samplings: Path, train_dir: Path, run_name: str, n_frames: int) -> list[str]:
    return ["--config", "debug", f"data={shards}", "sampling=quickstart", f"sampling_dir={samplings}",
            f"storage_path={train_dir}", f"run_name={run_name}", f"n_frames={n_frames}",
            f"out_weights={train_dir / (run_name + '.weights')}"]


def run_quickstart(cfg: QuickstartConfig) -> dict:
    st = Stages(cfg.out, "quickstart", cpu_isa=cfg.cpu_isa)
    if cfg.fresh and st.root.exists():
        shutil.rmtree(st.root)
    made = st.path("quickstart_config.yaml")
    if made.is_file():  # finished stages are skipped: their weights would be another rounding's
        was = (yaml.safe_load(made.read_text()) or {}).get("cpu_isa", "")
        check(was == cfg.cpu_isa, f"{st.root} was made with cpu_isa={json.dumps(was)}; resume it with the same "
                                  "setting, or pass fresh=true (or another out=) to start over")
    capability = pin_cpu_isa(cfg.cpu_isa)  # before any torch operation here or in a Ray worker this starts
    release = None if cfg.from_scratch else _release(cfg)
    st.root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, st.path("quickstart_config.yaml"))
    print(f"steve1 quickstart: everything goes to {st.root}"
          + ("" if release is None else f"; fine-tuning from the released world models in {release}"))
    # its own cluster, even when `ray start` left one on this host (set RAY_ADDRESS to use that one)
    connect(private=True, num_cpus=max(2, os.cpu_count() or 2), include_dashboard=True, log_to_driver=False,
            env_vars={"PYTHONPATH": str(_REPO)})
    world_arg = world_override(cfg.world)  # the same world for recording, serving's rollouts and evaluation
    train_dir = st.path("train")
    embedder = st.path("embedder", "mineclip.pth") if release is None else release / "mineclip.pth"
    world, shards, samplings = _record_dataset(st, cfg, world_arg, embedder, train_embedder=release is None)

    if release is not None:
        run_name = "steve1"
        weights, lr, goal_lr_scale = finetune_plan(cfg, release)  # `release` was verified by _release
        goal_trained = weights == RELEASE_STEVE1
        st.run("fine-tune STEVE-1 from the released " + ("STEVE-1" if goal_trained else "foundation")
               + " policy (" + ("segment and " if cfg.segment_goals else "") + "event goals, p_uncond)", "train",
               "steve1_ray.train.run",
               _train_args(shards, samplings, train_dir, run_name, cfg.finetune_frames)
               + [f"model={release / released_policy_model(release, weights)}",
                  f"in_weights={release / weights}",
                  f"goal_event_horizon={cfg.event_horizon}", "goal_event_pick=last", f"lr={lr}",
                  f"goal_lr_scale={goal_lr_scale}",
                  "val_every_steps=128", "checkpoint_every_steps=128"]
               + ([f"goal_segments={world}"] if cfg.segment_goals else [])
               + ([f"free_play={world}"] if cfg.free_play else []),
               done=train_dir / f"{run_name}.weights")
        prior = release / "prior.pt"
    else:
        run_name = "policy"
        st.run("train the policy (behaviour cloning, hindsight relabeling, Ray Train)", "train",
               "steve1_ray.train.run", _train_args(shards, samplings, train_dir, run_name, cfg.policy_frames),
               done=train_dir / "policy.weights")
        if cfg.event_frames:
            run_name = "policy_events"
            st.run("fine-tune the policy on event goals (the farthest event within 40 frames)", "train",
                   "steve1_ray.train.run",
                   _train_args(shards, samplings, train_dir, run_name, cfg.event_frames)
                   + [f"in_weights={train_dir / 'policy.weights'}", "goal_event_horizon=40", "goal_event_pick=last",
                      "lr=3e-4"],
                   done=train_dir / f"{run_name}.weights")
        prior = st.path("prior", "prior.pt")
        st.run("train the prior (text embedding → visual goal embedding)", "train-prior", "steve1_ray.train.prior",
               ["--config", "world", f"world={world}", f"data={shards}", f"out={prior}",
                f"epochs={cfg.prior_epochs}", f"mineclip_path={embedder}"],
               done=prior.with_suffix(".json"))  # written after prior.pt
    weights = train_dir / f"{run_name}.weights"

    try:
        checkpoint = latest_checkpoint(train_dir / run_name)
    except FileNotFoundError as e:
        raise SystemExit(f"quickstart: {e}") from None
    st.run("serve: start the prompt-to-action service", "serve", "steve1_ray.serving.run",
           ["blocking=false", f"port={cfg.port}", f"checkpoint={checkpoint}",
            f"mineclip={embedder}", f"prior={prior}", "rollout_workers=1", world_arg])
    print(f"\n[{len(st.times) + 1}] play {cfg.prompt!r} through http://127.0.0.1:{cfg.port}/rollouts", flush=True)
    t = time.time()
    play = _play_prompt(cfg, st.path("play"))
    st.timed("play a prompt over HTTP", time.time() - t)
    if not cfg.keep_serving:
        from ray import serve

        serve.shutdown()
    baseline = [] if release is None else [f"baseline_policy={release / 'foundation.model'}",
                                           f"baseline_weights={release / 'foundation.weights'}"]
    st.run("evaluate: prompts × guidance scales vs the unconditioned agent"
           + ("" if release is None else " and the foundation policy"), "evaluate", "steve1_ray.evaluate.run",
           ["--config", "crafter", f"policy={checkpoint}", f"embedder={embedder}", f"prior={prior}",
            f"out_dir={st.path('eval')}", f"episodes={cfg.eval_episodes}", f"max_steps={cfg.eval_steps}",
            "prompts=" + json.dumps(cfg.eval_prompts), "cond_scales=" + json.dumps(cfg.eval_scales),
            # the captions only: other phrasings double the evaluation (`steve1 evaluate --config crafter` has them)
            f"seed={cfg.eval_seed}", world_arg, "workers=2", "paraphrases={}", *baseline])

    summary = {"out": str(st.root), "minutes": round((time.time() - st.t0) / 60, 1), "cpu_capability": capability,
               "scenario": "from scratch" if release is None else f"fine-tune from {release}",
               "stage_seconds": {k: round(v, 1) for k, v in st.times.items()},
               "rollout_video": str(st.path("play", "rollout.mp4")), "rollout_metrics": play,
               "report": str(st.path("eval", "report.md")), "tensorboard": f"tensorboard --logdir {train_dir}",
               "policy_weights": str(weights), "checkpoint": str(checkpoint)}
    st.path("summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print("\n" + "=" * 72)
    print(f"quickstart done in {duration(time.time() - st.t0)}\n\n{st.table()}\n")
    following = st.path("eval", "following.json")
    if following.is_file():
        rows = json.loads(following.read_text())
        print(f"prompts followed: {sum(bool(r.get('followed')) for r in rows)} of {len(rows)} "
              f"(details at the top of the report)")
    print(f"  video of {cfg.prompt!r}:  {summary['rollout_video']}")
    print(f"  evaluation report:     {summary['report']}")
    print(f"  TensorBoard:           {summary['tensorboard']}")
    print(f"  policy (original fmt): {summary['policy_weights']}")
    if cfg.keep_serving:
        print(f"  server:                http://127.0.0.1:{cfg.port}/  (Ctrl-C to stop)")
    return summary


def _run(cfg: QuickstartConfig) -> int:
    run_quickstart(cfg)  # saves the config as <out>/quickstart_config.yaml
    if cfg.keep_serving:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


JOB = Job("quickstart", QuickstartConfig, _run, summary=__doc__.strip().splitlines()[0], errors=(CpuIsaError,),
          examples="""
          steve1 quickstart                         # fine-tune from the released world models (README)
          steve1 quickstart tiny=true               # a few-minute smoke run
          steve1 quickstart from_scratch=true episodes=100 policy_frames=262144 event_frames=131072""")


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, argv)


if __name__ == "__main__":
    sys.exit(main())
