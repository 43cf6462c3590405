"""`steve1 release-world`: the embedded world's released models, made by the project's own jobs.

STEVE-1 fine-tunes OpenAI's VPT foundation model with goals from a pretrained MineCLIP, and its authors release the
result. This command makes the same four files for the embedded world, so that the quick start is the fine-tune a
STEVE-1 user does on new data:

    record (scripted demonstrators, seeds from `seed`, other than the quick start's)
      → train the world embedder (MineCLIP layout; text tower on captions and template paraphrases)
      → (its text tower alone on more phrasings, the goals unchanged: `text_epochs`; after the policies, before the
        prior; with `goal_whiten`, before the whitening)
      → dataset (shards embedded with it) → sampling
      → train the foundation policy: unconditioned behaviour cloning (p_uncond 1, goal layer frozen), VPT's role
      → train STEVE-1 on the same recordings: goal-conditioned behaviour cloning from scratch (hindsight goals,
        p_uncond 0.1; every frame of a demonstrator's reached segment conditioned on the clip that ends it,
        `goal_segments`; optionally then event goals, `event_frames`): the quick start fine-tunes this one
        (`goal_frames=0`: no STEVE-1 policy, the quick start fine-tunes the foundation)
      → train the prior (text → visual goal) on the world's captions
      → <out>/ foundation.model + foundation.weights (VPT layout: no goal layer), steve1.weights (the same
               architecture with its goal layer, or `steve1_policy`'s, written beside it as steve1.model),
               mineclip.pth, prior.pt,
               manifest.json (sha256 and size of each file, the command, the commit, the metrics)

Why a goal-conditioned policy in the release (benchmarks/RESULTS.md, session 17): fine-tuned from the unconditioned
foundation on a quick start's 24 episodes, the policy hardly learns to use its goals (1 of 5 prompts followed in
every variant tried, sessions 12-16); trained with goals from the start on the release's 100 episodes and then
fine-tuned on the same 24 episodes, it follows 2 of 5; with segment goals in both, 3 of 5 (session 24).

Intermediate files (recordings, shards, training runs) go under `work`, not into `out`. Re-running the same
command resumes: finished stages are skipped, the recording and the dataset keep their finished episodes, and the
policy's training continues from its last checkpoint (the embedder and the prior, minutes each, start over).
The files load through the same strict loaders as the released Minecraft files (`steve1_ray.models.loading`);
Name them `released` wherever a policy, embedder or prior is asked for (`steve1_ray.models.loading`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import shlex
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from steve1_ray.cluster import connect
from steve1_ray.config import check, save_config, to_dict
from steve1_ray.models.loading import (RELEASE_FILES, RELEASE_STEVE1, RELEASE_STEVE1_MODEL, RELEASED_DIR,
                                       checkpoint_files, latest_checkpoint, released_world)
from steve1_ray.numerics import CPU_ISAS, DEFAULT_CPU_ISA, CpuIsaError, pin_cpu_isa
from steve1_ray.runner import Job, run_job
from steve1_ray.progress import duration
from steve1_ray.stages import Stages, dataset_stages
from steve1_ray.world.config import WorldConfig, world_override

_REPO = Path(__file__).resolve().parents[1]
FILES = RELEASE_FILES
MAX_RELEASE_BYTES = 40 * 2**20
"""all files of a release together (they are committed to git)"""


@dataclass
class ReleaseConfig:
    """Budget of each stage of the embedded world's release."""

    out: str = ""
    """the release folder: foundation.model/.weights, mineclip.pth, prior.pt, manifest.json; default: the
    committed `steve1_ray/released/world`"""
    work: str = "runs/release-world"
    """intermediate files: recordings, shards, samplings, training runs (not committed; keep them to resume)"""
    episodes: int = 100
    """demonstrator episodes recorded (the foundation's behaviour-cloning data)"""
    max_steps: int = 600
    """frames per episode at most (20 per second)"""
    seed: int = 100000
    """first world seed of the recording (episode i plays world seed + i; the quick start records from 0)"""
    world: WorldConfig = field(default_factory=lambda: WorldConfig(tree_logs=4))
    """the embedded world of the release (trees give 4 logs, docs/world.md); the quick start's, serving's and the
    evaluation's defaults play in the same world (the quick start says so when its world differs)"""
    appetite: str = "eager"
    """the demonstrators' appetite (`steve1 record appetite=`, docs/world.md): eager (the committed release) or
    needs (tasks stand out from free play 3.7-12x instead of 2.7-5.8x)"""
    stop_at_full: bool = False
    """the demonstrators' gathering goals other than the episode's task end once what they fill is full (`steve1
    record stop_at_full=`, docs/world.md); false in the committed release"""
    free_play: bool = False
    """the STEVE-1 goal stage meets the zero goal only on the recording's free-play episodes (`steve1 train
    free_play=<the recording>`, docs/training.md), on a `p_uncond` share of all sequences as before: the
    unconditioned branch learns play without a task; false in the committed release"""
    embedder_epochs: int = 20
    """epochs of the world embedder's contrastive training: 20 in the committed release since session 38 (8 before).
    With 8 the cow's and the table's goals were one goal (centroids at cosine 0.96: "eat a cow" placed tables); 20
    separates them (held-out end-clip accuracy 0.83: eat a cow 0.83, place a crafting table 0.70, chop a tree 0.94).
    With the `fovea` policy that did not help (2 of 5, session 29); with `fovea_film` the quick start followed chop a
    tree for the first time (3.2x and 3.1x at evaluation seeds 0 and 1) and eat a cow 6.0x at seed 1 (benchmarks/RESULTS.md,
    session 38). A work folder resumes only with the epochs it was made with (8 for folders from before)"""
    embedder_args: list[str] = field(default_factory=list)
    """more `key=value` arguments for `steve1 train-embedder --config world` (e.g. paraphrase settings)"""
    text_epochs: int = 8
    """then this many epochs of the embedder's text tower alone (`steve1 train-text-tower`: template paraphrases and
    filler words, the video tower frozen so every goal stays as it is), before the prior is trained on it;
    0 = none (the release before session 26)"""
    text_anchor: float = 5.0
    """the text-tower stage's `anchor` (`steve1 train-text-tower anchor=`): each wording's embedding, as the prior
    reads it, is pulled toward its goal's caption prototype, so a phrasing that is no caption gets its caption's goal
    and not a shorter blend of goals. 5 in the committed release since session 44: the evaluation's phrasings were
    then followed 5 and 5 of 5 at seeds 0 and 1, against 4 and 4 with 0 (benchmarks/RESULTS.md). 0 = none (the
    release before). With an anchor the stage and the prior after it write folders of their own
    (`text_tower_anchor<A>/`, `prior_text_anchor<A>/`), so an older work folder resumes into it"""
    goal_whiten: bool = False
    """whiten the embedder's goal space (`steve1 whiten-embedder`, fitted on the release's dataset embedded with
    the trained embedder; the released mineclip.pth is then the whitened one, and the policies and the prior are
    trained on its goals): docs/embedders.md, "A whitened goal space". Off in the committed release: one
    measured run followed no more prompts than without (benchmarks/RESULTS.md, session 20)"""
    goal_segments: bool = True
    """the goal stage conditions every frame of a demonstrator's reached segment on the clip that ends it
    (`steve1 train goal_segments=<the recording>`, docs/training.md), over the hindsight goals; false = hindsight
    goals alone (the release before session 24)"""
    goal_balance: float = 0.0
    """the STEVE-1 goal stage draws its sequences so that each segment goal comes up in proportion to (its count) **
    (1 - goal_balance) (`steve1 train goal_balance=`, docs/training.md; needs `goal_segments`); 0 in the committed
    release"""
    policy: str = "debug"
    """the foundation policy's preset (`steve1 train --config <policy>`; debug: the most fine-tuning per
    CPU-minute, docs/world.md)"""
    foundation_frames: int = 262144
    """behaviour-cloning frames of the foundation policy (unconditioned: p_uncond 1, goal layer frozen)"""
    goal_frames: int = 262144
    """behaviour-cloning frames of the STEVE-1 policy, goal-conditioned from scratch (hindsight goals, the preset's
    p_uncond); 0 = no STEVE-1 policy in the release"""
    steve1_policy: str = "fovea_film"
    """the STEVE-1 policy's architecture: a preset (`steve1_ray.models.policy.PRESETS`, e.g. `wide`, `fovea`) or a
    `.model` file; the release then carries it as `steve1.model` beside `steve1.weights`. Empty: the foundation's
    architecture (no `steve1.model`, as the original's `steve1.weights` goes with VPT's `2x.model`). Default
    `fovea_film` (the committed release since session 38): `fovea` (debug with a second small CNN on the frame's
    centre, where the player acts; sessions 29-37) whose goal also scales and shifts both CNNs' last channels. Alone (with
    8 embedder epochs, session 37), its policy no longer drinks when asked to chop a tree (6.7 drinks per episode at scale 0 against the unconditioned
    38; every fovea release drank more than unconditioned); the quick start on it, with 20 embedder epochs, followed
    3 and 4 of 5 prompts at evaluation seeds 0 and 1 (with 8: 4 and 3; the fovea with 8: 3 and 3, with 20: 2 and 2;
    benchmarks/RESULTS.md, sessions 29, 37, 38; guidance scales 0, 2, 6). On another machine in session 39 its quick
    start followed 2 and 4 with those scales, and 4, 4, 3 and 3 at seeds 0-3 with the new default scales 0, 1, 2
    (chosen on seeds 0 and 1)"""
    event_frames: int = 0
    """then this many frames on event goals (`goal_event_horizon=40 goal_event_pick=last lr=3e-4`); 0 = none (the
    committed release since session 24; 131072 before, with hindsight goals alone)"""
    prior_epochs: int = 50
    """epochs of the prior's training (the original's 50)"""
    cpu_isa: str = DEFAULT_CPU_ISA
    """the CPU kernels every stage runs (`steve1_ray.numerics`): `avx2` pins torch's, MKL's and oneDNN's to AVX2, so an
    AVX-512 machine trains what the committed release's AVX2 machine trained (with the machine's own AVX-512 kernels
    the world embedder diverged from epoch 1: benchmarks/RESULTS.md, session 41); a CPU without AVX2 runs its own and
    says so; "" = the machine's own everywhere"""
    tiny: bool = False
    """smallest settings everywhere (tests)"""

    def __post_init__(self):
        check(self.episodes >= 2, f"episodes={self.episodes!r}: need at least 2 (some are held out for validation)")
        check(self.max_steps >= 64, f"max_steps={self.max_steps!r}: episodes need at least 64 frames")
        check(self.appetite in ("eager", "needs"), f"appetite={self.appetite!r}: choose eager or needs")
        check(self.cpu_isa in CPU_ISAS, f"cpu_isa={self.cpu_isa!r}: choose one of {list(CPU_ISAS)}")
        check(self.world.backend == "crafter",
              f"world.backend={self.world.backend!r}: the release records with crafter's scripted demonstrators")
        check(self.foundation_frames > 0, f"foundation_frames={self.foundation_frames!r} must be > 0")
        check(self.goal_frames >= 0 and self.event_frames >= 0,
              f"goal_frames={self.goal_frames!r}, event_frames={self.event_frames!r} must be >= 0")
        check(self.goal_frames > 0 or self.event_frames == 0,
              f"event_frames={self.event_frames!r} needs goal_frames > 0 (the event stage continues that policy)")
        check(self.goal_frames > 0 or not self.steve1_policy,
              f"steve1_policy={self.steve1_policy!r} needs goal_frames > 0 (it is the STEVE-1 policy's architecture)")
        if self.steve1_policy:
            from steve1_ray.models.policy import PRESETS

            check(self.steve1_policy in PRESETS or (Path(self.steve1_policy).suffix == ".model"
                                                    and Path(self.steve1_policy).is_file()),
                  f"steve1_policy={self.steve1_policy!r} is neither a preset ({sorted(PRESETS)}) nor a .model file")
        check(self.text_epochs >= 0, f"text_epochs={self.text_epochs!r} must be >= 0")
        check(math.isfinite(self.text_anchor) and self.text_anchor >= 0,
              f"text_anchor={self.text_anchor!r} must be a number >= 0")
        check(0.0 <= self.goal_balance <= 1.0 and (not self.goal_balance or self.goal_segments),
              f"goal_balance={self.goal_balance!r} must be in [0, 1] and needs goal_segments=true")
        if self.tiny:
            self.episodes, self.max_steps, self.embedder_epochs = 3, 160, 1
            self.text_epochs = min(self.text_epochs, 1)
            self.foundation_frames, self.prior_epochs = 1024, 2
            self.goal_frames, self.event_frames = (512 if self.goal_frames else 0), (512 if self.event_frames else 0)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_entries(root: Path, names=FILES) -> dict[str, dict]:
    return {n: {"sha256": sha256(root / n), "bytes": (root / n).stat().st_size} for n in names}


def verify(root: str | Path) -> dict:
    """Check every file of a release folder against its manifest (size and sha256); returns the manifest."""
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text())
    allowed = (set(FILES), set(FILES) | {RELEASE_STEVE1}, set(FILES) | {RELEASE_STEVE1, RELEASE_STEVE1_MODEL})
    if not isinstance(manifest.get("files"), dict) or set(manifest["files"]) not in allowed:
        raise ValueError(f"{root / 'manifest.json'}: lists {sorted(manifest.get('files') or [])}, not the release's "
                         f"files {sorted(FILES)} (and, optionally, {RELEASE_STEVE1}, with or without "
                         f"{RELEASE_STEVE1_MODEL})")
    for name in (RELEASE_STEVE1, RELEASE_STEVE1_MODEL):
        if name not in manifest["files"] and (root / name).exists():
            raise ValueError(f"{root / name}: not listed in {root / 'manifest.json'} (an unverified policy)")
    for name, want in manifest["files"].items():
        got = file_entries(root, [name])[name]
        if got != want:
            raise ValueError(f"{root / name}: {got} does not match the manifest's {want}")
    return manifest


def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _check_out(out: Path) -> None:
    """Refuse to replace a folder that is not a release (`out=.` must not delete the working tree)."""
    if out.exists():
        extra = sorted(p.name for p in out.iterdir() if p.name not in FILES + (RELEASE_STEVE1, RELEASE_STEVE1_MODEL,
                                                                                 "manifest.json"))
        check(out.is_dir() and not extra, f"out={out}: exists and is not a release folder (it holds {extra[:5]}); "
                                          "give a release folder, an empty folder or a new path")


def export_foundation(model: Path, weights: Path, out: Path) -> dict:
    """The trained foundation → `foundation.model` + `foundation.weights` without the goal layer (VPT's layout:
    a STEVE-1 fine-tune adds a fresh goal layer, as from `rl-from-foundation-2x.weights`)."""
    import torch

    from steve1_ray.models.formats import GOAL_KEYS, read_model_file, read_state_dict, write_model_file

    sd, _ = read_state_dict(weights)
    cfg = read_model_file(model)
    write_model_file(cfg, out / "foundation.model")
    torch.save({k: v for k, v in sd.items() if k not in GOAL_KEYS}, out / "foundation.weights")
    return {"preset_shape": {"hidsize": cfg.hidsize, "embed_dim": cfg.embed_dim},
            "parameters": int(sum(v.numel() for k, v in sd.items() if k not in GOAL_KEYS))}


def run_release(cfg: ReleaseConfig, argv: list[str]) -> dict:
    commit = _git_commit()  # the code that runs is the code at the start
    work = Path(cfg.work).resolve()
    st = Stages(work, "release-world", cpu_isa=cfg.cpu_isa)
    work.mkdir(parents=True, exist_ok=True)
    before = work / "release_config.yaml"
    if before.is_file():  # stages are resumed by position: a folder made with the other goal space (or the other
        # STEVE-1 architecture) would mix both
        made = yaml.safe_load(before.read_text()) or {}
        # With goal_whiten the text-tower stage runs before the whitening and moves every later stage's position, so
        # text_epochs must match too (0 in older folders); without it the stage comes after the policies and writes
        # its own prior (prior_text/), so an older folder gains it safely. text_anchor likewise: with goal_whiten the
        # whitened embedder carries its text tower; without, its stages write folders of their own.
        # The demonstrators and the zero goal's episodes change what a resumed recording or policy stage would mix.
        # A finished embedder stage is skipped: resumed with other epochs, the manifest would name epochs it never had.
        keys = ((("goal_whiten", False), ("steve1_policy", ""), ("appetite", "eager"), ("stop_at_full", False),
                 ("free_play", False), ("goal_balance", 0.0), ("embedder_epochs", 8))
                + ((("text_epochs", 0), ("text_anchor", 0.0)) if cfg.goal_whiten else ()) + (("cpu_isa", ""),))
        for key, default in keys:
            was, now = made.get(key, default), getattr(cfg, key)
            if key == "text_anchor" and not (made.get("text_epochs") and cfg.text_epochs):
                was = now = 0.0  # no text-tower stage on either side: no anchor
            check(was == now, f"{work} was made with {key}={json.dumps(was)}; resume it with the "
                                            "same setting, or start over in a new work folder")
    capability = pin_cpu_isa(cfg.cpu_isa)  # before any stage runs a torch operation or starts a Ray worker
    save_config(cfg, work / "release_config.yaml")
    print(f"steve1 release-world: intermediate files in {work}, the release in {Path(cfg.out or RELEASED_DIR / 'world').resolve()}")
    connect(private=True, num_cpus=max(2, os.cpu_count() or 2), log_to_driver=False,
            env_vars={"PYTHONPATH": str(_REPO)})
    world_arg = world_override(cfg.world)
    world, embedder, shards = st.path("world"), st.path("embedder"), st.path("shards")
    samplings, train_dir = st.path("samplings"), st.path("train")
    anchor = repr(float(cfg.text_anchor)).removesuffix(".0")  # 5.0 -> "5"; every digit kept
    anchored = f"_anchor{anchor}" if cfg.text_anchor and cfg.text_epochs else ""  # (no stage, no anchor)
    prior = st.path(f"prior_text{anchored}" if cfg.text_epochs else "prior", "prior.pt")  # of the text tower it had
    foundation = train_dir / "foundation.weights"

    st.run("record demonstrator episodes", "record", "steve1_ray.world.record",
           [f"out={world}", f"episodes={cfg.episodes}", f"max_steps={cfg.max_steps}", f"seed={cfg.seed}", world_arg,
            f"appetite={cfg.appetite}"] + (["stop_at_full=true"] if cfg.stop_at_full else []),
           done=world / "summary.json")
    st.run("train the world embedder (MineCLIP layout)", "train-embedder", "steve1_ray.train.embedder",
           ["--config", "world", f"recordings={world}", f"out={embedder}", f"epochs={cfg.embedder_epochs}",
            *cfg.embedder_args],
           done=embedder / "metrics.json")  # written after mineclip.pth
    goal_embedder = embedder / "mineclip.pth"
    text_dir = st.path(f"text_tower{anchored}")

    def text_tower(src: Path, data: Path) -> Path:
        """The embedder `src` with its text tower trained on more phrasings against `data`'s goals (unchanged)."""
        st.run("train the embedder's text tower on more phrasings (goals unchanged)", "train-text-tower",
               "steve1_ray.train.text_tower", [f"embedder={src}", f"world={world}", f"data={data}", f"out={text_dir}",
                                               f"epochs={cfg.text_epochs}"]
               + ([f"anchor={anchor}"] if anchored else []),
               done=text_dir / "metrics.json")  # written after mineclip.pth
        return text_dir / "mineclip.pth"

    if cfg.goal_whiten:
        raw_shards, goal_embedder = st.path("shards_unwhitened"), st.path("embedder_white", "mineclip.pth")
        st.run("dataset with the trained embedder, to fit the goal whitening on", "dataset", "steve1_ray.data.pipeline",
               ["--config", "world", f"output={raw_shards}", f"sources=[local:{world / 'contractor'}]",
                f"mineclip_path={embedder / 'mineclip.pth'}"],
               done=raw_shards / "summary.json")
        # the text tower learns against the raw goals; the whitening (of the goals only) is then fitted as before
        src = text_tower(embedder / "mineclip.pth", raw_shards) if cfg.text_epochs else embedder / "mineclip.pth"
        st.run("whiten the embedder's goal space", "whiten-embedder", "steve1_ray.train.whiten",
               [f"embedder={src}", f"data={raw_shards}", f"out={goal_embedder}"],
               done=goal_embedder.with_suffix(".json"))  # written after mineclip.pth
    dataset_stages(st, world, goal_embedder, shards, samplings, "release", val_share=10)
    st.run("train the foundation policy (unconditioned behaviour cloning)", "train", "steve1_ray.train.run",
           ["--config", cfg.policy, f"data={shards}", "sampling=release", f"sampling_dir={samplings}",
            f"storage_path={train_dir}", "run_name=foundation", f"n_frames={cfg.foundation_frames}",
            "p_uncond=1.0", "freeze=[goal]", "val_every_steps=256", "checkpoint_every_steps=256",
            f"out_weights={foundation}"],
           done=foundation)
    # each stage its own output (its done marker); the release's steve1.weights is the last one run
    goals, events = train_dir / "steve1_goals.weights", train_dir / RELEASE_STEVE1
    steve1 = events if cfg.event_frames else goals
    if cfg.goal_frames:  # the foundation's architecture, or its own
        model = cfg.steve1_policy or checkpoint_files(latest_checkpoint(train_dir / "foundation"))[0]
        common = ["--config", cfg.policy, f"data={shards}", "sampling=release", f"sampling_dir={samplings}",
                  f"storage_path={train_dir}", f"model={model}", "val_every_steps=256", "checkpoint_every_steps=256"]
        st.run("train STEVE-1 (goal-conditioned behaviour cloning from scratch, hindsight goals, p_uncond)", "train",
               "steve1_ray.train.run", common + ["run_name=steve1_goals", f"n_frames={cfg.goal_frames}",
                                                 f"out_weights={goals}"]
               + ([f"goal_segments={world}"] if cfg.goal_segments else [])
               + ([f"free_play={world}"] if cfg.free_play else [])
               + ([f"goal_balance={cfg.goal_balance}"] if cfg.goal_balance else []),
               done=goals)
        if cfg.event_frames:
            st.run("fine-tune STEVE-1 on event goals (the farthest event within 40 frames)", "train",
                   "steve1_ray.train.run",
                   common + ["run_name=steve1", f"n_frames={cfg.event_frames}", f"in_weights={goals}",
                             "goal_event_horizon=40", "goal_event_pick=last", "lr=3e-4", f"out_weights={events}"],
                   done=events)
    if cfg.text_epochs and not cfg.goal_whiten:  # after the policies, so their stages keep their positions; its goals
        goal_embedder = text_tower(goal_embedder, shards)  # are the dataset's (the same video tower)
    st.run("train the prior (text embedding → visual goal embedding)", "train-prior", "steve1_ray.train.prior",
           ["--config", "world", f"world={world}", f"data={shards}", f"out={prior}", f"epochs={cfg.prior_epochs}",
            f"mineclip_path={goal_embedder}"],
           done=prior.with_suffix(".json"))  # written after prior.pt

    t = time.time()
    out = Path(cfg.out or RELEASED_DIR / "world").resolve()
    _check_out(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # the final weights (the training stage's done marker) with the run's architecture
    policy_info = export_foundation(checkpoint_files(latest_checkpoint(train_dir / "foundation"))[0], foundation, tmp)
    shutil.copyfile(goal_embedder, tmp / "mineclip.pth")
    shutil.copyfile(prior, tmp / "prior.pt")
    names = FILES
    if cfg.goal_frames:
        shutil.copyfile(steve1, tmp / RELEASE_STEVE1)
        names += (RELEASE_STEVE1,)
    if cfg.steve1_policy:  # the architecture the STEVE-1 stages trained (their checkpoints' .model)
        from steve1_ray.models.formats import read_model_file, write_model_file

        last = "steve1" if cfg.event_frames else "steve1_goals"
        write_model_file(read_model_file(checkpoint_files(latest_checkpoint(train_dir / last))[0]),
                         tmp / RELEASE_STEVE1_MODEL)
        names += (RELEASE_STEVE1_MODEL,)
    files = file_entries(tmp, names)
    total = sum(f["bytes"] for f in files.values())
    check(total <= MAX_RELEASE_BYTES, f"the release is {total / 2**20:.1f} MiB, over the "
                                      f"{MAX_RELEASE_BYTES / 2**20:.0f} MiB that may go into git")
    best = train_dir / "foundation_best.json"
    record_summary = json.loads((world / "summary.json").read_text())
    manifest = {
        "command": "steve1 release-world" + (" " + shlex.join(argv) if argv else ""),
        "commit": commit,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_capability": capability,  # torch's kernels, as pinned by cpu_isa
        "world": to_dict(cfg.world),
        "config": to_dict(cfg),
        "files": files,
        "bytes": total,
        "metrics": {
            "recordings": {k: record_summary.get(k) for k in ("episodes", "frames") if k in record_summary},
            "embedder": json.loads((embedder / "metrics.json").read_text()),
            **({"text_tower": json.loads((text_dir / "metrics.json").read_text())} if cfg.text_epochs else {}),
            **({"goal_whitening": json.loads(goal_embedder.with_suffix(".json").read_text())}
               if cfg.goal_whiten else {}),
            # the exported weights are the final ones; `best_*` describe the best validation step of the run
            "foundation": {**policy_info, **(json.loads(best.read_text()) if best.is_file() else {})},
            # per stage, by its output file (`<stem>_best.json` beside it)
            **({"steve1": {w.stem: json.loads(w.with_name(w.stem + "_best.json").read_text())
                           for w in ((goals, events) if cfg.event_frames else (goals,))
                           if w.with_name(w.stem + "_best.json").is_file()}} if cfg.goal_frames else {}),
            "prior": json.loads(prior.with_suffix(".json").read_text()),
        },
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)  # the new release replaces the old one by two renames; the old one is removed after
    shutil.rmtree(old, ignore_errors=True)
    st.timed("export the release", time.time() - t)
    print(f"\n{st.table()}\n\nrelease-world done in {duration(time.time() - st.t0)}: {out} "
          f"({total / 2**20:.1f} MiB; manifest.json lists each file's sha256)", flush=True)
    return manifest


def _run(cfg: ReleaseConfig, argv: list[str] | None = None) -> int:
    run_release(cfg, argv or [])
    return 0


JOB = Job("release-world", ReleaseConfig, _run, summary=__doc__.strip().splitlines()[0], errors=(CpuIsaError,),
          examples="""
          steve1 release-world                       # the committed release (hours on 2 CPU cores; re-run resumes)
          steve1 release-world tiny=true out=/tmp/rw work=/tmp/rw-work   # a smoke run""")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # the manifest names the exact command line
    return run_job(dataclasses.replace(JOB, run=lambda cfg: _run(cfg, argv)), argv)


if __name__ == "__main__":
    sys.exit(main())
