"""The record job: N scripted-demonstrator episodes of the embedded world, in parallel Ray tasks.

    python jobs/record.py out=data/world episodes=16 max_steps=1000
    steve1 record out=data/world episodes=4 layout=custom
    ray job submit --working-dir . -- python jobs/record.py out=/shared/world episodes=200

Output (contractor layout, the default):

    <out>/contractor/<name>.mp4 + <name>.jsonl   one pair per episode, VPT contractor format
    <out>/index.json                             {"basedir": "<out>/", "relpaths": ["contractor/<name>.mp4", ...]}
    <out>/captions.jsonl                         one line per goal segment: episode, start, end, text, ...
    <out>/meta/<name>.json                       per-episode record (seed, frames, achievements, segments)
    <out>/summary.json, <out>/record_config.yaml

`layout=custom` writes `<out>/<name>/{video.mp4, actions.jsonl}` instead (no index.json). Re-running skips
finished episodes (their meta file exists), so an interrupted job resumes; `overwrite=true` re-records.
Feed the result to the dataset job with `sources=[contractor:<out>/index.json]` or `sources=[<out>/contractor]`.
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from steve1_ray.cluster import connect
from steve1_ray.config import ConfigError, check, from_dict, save_config, to_dict
from steve1_ray.progress import Meter, rate
from steve1_ray.runner import Job, run_job
from steve1_ray.world.config import WorldConfig
from steve1_ray.world.demonstrators import GOALS
from steve1_ray.world.recorder import EpisodeRecord, episode_paths, record_episode


@dataclass
class RecordConfig:
    """Options of the record job (YAML overlays + key=value overrides)."""

    MOVED_KEYS: ClassVar[dict[str, str]] = {k: f"world.{k}" for k in ("tree_logs", "zombie_rate", "target_outline", "frame_width",
                                                           "frame_height", "tile_px")}
    """keys of older configs and where they live now (named in the error instead of the list of known keys)"""

    out: str = "data/world"
    """dataset root folder"""
    episodes: int = 8
    """how many episodes to record"""
    max_steps: int = 1000
    """episode length limit in frames (20 per second); an episode also ends when the player dies"""
    seed: int = 0
    """episode i uses world and demonstrator seed `seed + i`"""
    layout: str = "contractor"
    """contractor: <out>/contractor/<name>.mp4|.jsonl + index.json; custom: <out>/<name>/{video.mp4, actions.jsonl}"""
    name_prefix: str = "crafter-demo"
    """episode names are <name_prefix>-s<seed>-<i:05d> (letters, digits and '-' only)"""
    noise: float = 0.05
    """demonstrator: per-step probability of a random action"""
    goal_steps: int = 150
    """demonstrator: steps before an unfinished goal is abandoned"""
    min_segment: int = 16
    """demonstrator: a goal reached sooner is kept up until its captioned segment has this many frames"""
    sight: bool = False
    """demonstrator: true = it knows only what the frame shows and explores to find the rest; false = it knows
    the map within 12 tiles and walks to targets out of view (docs/world.md)"""
    goals: list[str] = field(default_factory=list)
    """demonstrator: goals it may pick (names in steve1_ray.world.demonstrators.GOALS); empty = all"""
    appetite: str = "eager"
    """demonstrator: eager = drinks, hunts and chops whenever it can; needs = mostly when its needs call for it,
    which sharpens the contrast between a task and free play (docs/world.md)"""
    stop_at_full: bool = False
    """demonstrator: true = a gathering goal (drink, cow, wood, ...) that is not the episode's task ends once what
    it fills is full (9), so only the task gathers at full; false = each takes its count and lingers (docs/world.md)"""
    focus_fraction: float = 0.5
    """share of episodes that are *tasks*: the demonstrator prefers one goal for the whole episode (drawn from
    `focus_goals` by the episode's seed), the rest is free play. Tasks give hindsight goals that stay the same for
    long stretches, which is what a constant prompt asks of the policy (see docs/world.md)"""
    focus_goals: list[str] = field(default_factory=lambda: [
        "collect_wood", "collect_sapling", "place_plant", "collect_drink", "eat_cow", "place_table",
        "collect_stone", "place_stone"])
    """goals a task episode may prefer"""
    focus_order: str = "random"
    """random: each episode draws whether it is a task, and which, from its seed; cycle: tasks are spread evenly
    (round(episodes * focus_fraction) of them) and take `focus_goals` in turn, so a small recording has every
    goal (24 random draws gave one goal 0 of 12 tasks and another 5)"""
    world: WorldConfig = field(default_factory=WorldConfig)
    """the world recorded in (crafter only: the demonstrators read its state); `world.tree_logs=4`, ..."""
    driver: str = ""
    """a DAgger round (docs/world.md): a trained policy (checkpoint folder, `released`, or a `.model` with
    `driver_weights`) plays `driver_share` of the frames, the demonstrator the rest, and every recorded action is the
    demonstrator's, so the recording shows what to do in the states the policy reaches on its own. A task episode
    drives toward its goal's first caption (through `driver_embedder` and `driver_prior`, at guidance
    `driver_scale`), free play unconditioned. Empty: the demonstrator alone"""
    driver_weights: str = ""
    """weights for a `.model` driver (e.g. a release's steve1.model with its steve1.weights; `driver=released` names
    both)"""
    driver_embedder: str = ""
    """the driver's goal embedder (mineclip.pth)"""
    driver_prior: str = ""
    """the driver's prior (prior.pt)"""
    driver_share: float = 0.5
    """share of the frames whose played action is the driver's"""
    driver_scale: float = 2.0
    """guidance scale of a task episode's driver"""
    crf: int = 23
    """H.264 quality (lower = better, bigger files)"""
    preset: str = "superfast"
    """x264 speed preset"""
    use_ray: bool = True
    """false: record in this process, one episode after another"""
    num_cpus: float = 1.0
    """CPUs reserved per Ray task"""
    overwrite: bool = False
    """re-record episodes that already exist"""
    progress: bool = True
    """print progress lines with an ETA (every tenth of the episodes, at least every minute)"""

    def __post_init__(self):
        check(self.episodes >= 1, f"episodes={self.episodes}: record at least 1")
        check(self.max_steps >= 1, f"max_steps={self.max_steps} must be at least 1")
        check(self.layout in ("contractor", "custom"),
              f"layout={self.layout!r}: choose contractor or custom")
        check(self.name_prefix.replace("-", "").replace("_", "").isalnum(),
              f"name_prefix={self.name_prefix!r}: use letters, digits, '-' or '_' (no dots: STEVE-1 paths "
              "must not contain '.')")
        check(0.0 <= self.noise <= 1.0, f"noise={self.noise} must be in [0, 1]")
        check(self.goal_steps >= 1, f"goal_steps={self.goal_steps} must be at least 1")
        check(self.min_segment >= 1, f"min_segment={self.min_segment} must be at least 1")
        unknown = sorted(set(self.goals) - set(GOALS))
        check(not unknown, f"goals: unknown {unknown}; known goals: {sorted(GOALS)}")
        check(0.0 <= self.focus_fraction <= 1.0, f"focus_fraction={self.focus_fraction} must be in [0, 1]")
        unknown = sorted(set(self.focus_goals) - set(GOALS))
        check(not unknown, f"focus_goals: unknown {unknown}; known goals: {sorted(GOALS)}")
        check(self.focus_fraction == 0 or self.focus_goals, "focus_goals is empty but focus_fraction > 0")
        check(self.focus_order in ("random", "cycle"), f"focus_order={self.focus_order!r}: choose random or cycle")
        check(self.appetite in ("eager", "needs"), f"appetite={self.appetite!r}: choose eager or needs")
        check(self.world.backend == "crafter",
              f"world.backend={self.world.backend!r}: the scripted demonstrators record in crafter only")
        check(0 <= self.crf <= 51, f"crf={self.crf} must be in 0..51")
        check(self.num_cpus > 0, f"num_cpus={self.num_cpus} must be positive")
        check(self.seed >= 0, f"seed={self.seed} must be non-negative")
        check(0.0 <= self.driver_share <= 1.0, f"driver_share={self.driver_share} must be in [0, 1]")
        check(math.isfinite(self.driver_scale) and self.driver_scale >= 0,
              f"driver_scale={self.driver_scale} must be a finite number >= 0")
        check(not self.driver or (self.driver_embedder and self.driver_prior),
              "driver= needs driver_embedder= and driver_prior= (a task episode drives toward its goal's caption)")
        check(self.driver or not (self.driver_weights or self.driver_embedder or self.driver_prior),
              "driver_weights=/driver_embedder=/driver_prior= are set but driver= is empty (no DAgger round without "
              "a driving policy)")


def episode_name(cfg: RecordConfig, i: int) -> str:
    return f"{cfg.name_prefix}-s{cfg.seed}-{i:05d}"


def episode_focus(cfg: RecordConfig, i: int) -> str | None:
    """The goal episode i is a task for (None: free play); a function of the config and i, so re-runs agree."""
    allowed = [g for g in cfg.focus_goals if not cfg.goals or g in cfg.goals]
    if cfg.focus_order == "cycle":  # task k (k = 0, 1, ...) is the episode where floor(i * fraction) steps up
        task = math.floor((i + 1) * cfg.focus_fraction) > math.floor(i * cfg.focus_fraction)
        return str(allowed[math.floor(i * cfg.focus_fraction) % len(allowed)]) if task and allowed else None
    rng = np.random.default_rng([cfg.seed + i, 7919])
    if not cfg.focus_goals or rng.random() >= cfg.focus_fraction:
        return None
    return str(allowed[int(rng.integers(len(allowed)))]) if allowed else None


@functools.lru_cache(maxsize=2)
def _driver_models(policy: str, weights: str, embedder: str, prior: str, one_thread: bool):
    """(policy, embedder, prior) of a driver, loaded once per process and checked against each other (the goal
    models' width against the policy's goal layer). `one_thread`: in a Ray task of one CPU, torch uses one thread."""
    import torch

    from steve1_ray.agent import policy_embed_dim
    from steve1_ray.models.loading import load_goal_models, load_policy_spec

    if one_thread:
        torch.set_num_threads(1)
    net = load_policy_spec(policy, weights or None, seed=0)
    mineclip, prior_net = load_goal_models(embedder, prior, embed_dim=policy_embed_dim(net))
    return net, mineclip, prior_net


def check_driver(cfg: RecordConfig) -> None:
    """Load the driver's models once before any episode starts, so that a wrong path or a mismatched file is one
    clear error, not one per episode."""
    if not cfg.driver:
        return
    check(not (Path(cfg.driver).is_dir() and cfg.driver_weights),
          f"driver={cfg.driver!r} is a checkpoint folder, which has its own weights; drop driver_weights= "
          "(or give a .model file with them)")
    try:
        _driver_models(cfg.driver, cfg.driver_weights, cfg.driver_embedder, cfg.driver_prior, False)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ConfigError(f"driver: cannot load the driving policy and its goal models ({type(e).__name__}: {e})") \
            from None


def make_driver(cfg: RecordConfig, focus: str | None, seed: int):
    """Episode `seed`'s driver: frame -> MineRL action of `cfg.driver`, toward `focus`'s first caption at
    `cfg.driver_scale` (free play: the zero goal, unguided)."""
    import torch

    from steve1_ray.agent import act_batch, new_stream, policy_embed_dim, text_goal

    policy, embedder, prior = _driver_models(cfg.driver, cfg.driver_weights, cfg.driver_embedder, cfg.driver_prior,
                                             cfg.use_ray)
    if focus is None:
        stream = new_stream(policy, np.zeros(policy_embed_dim(policy), np.float32), None, seed=seed)
    else:
        goal = text_goal(embedder, prior, GOALS[focus].captions[0], prior_seed=seed)
        stream = new_stream(policy, goal, cfg.driver_scale, seed=seed)

    def drive(pov: np.ndarray) -> dict:
        with torch.inference_mode():
            return act_batch(policy, [stream], [pov])[0]
    return drive


def _record_one(cfg_dict: dict, i: int) -> dict:
    """One episode -> its record dict (or {"name", "error"}); writes <out>/meta/<name>.json last."""
    cfg = from_dict(RecordConfig, cfg_dict)
    name = episode_name(cfg, i)
    try:
        focus = episode_focus(cfg, i)
        rec = record_episode(
            cfg.out, name, seed=cfg.seed + i, max_steps=cfg.max_steps, layout=cfg.layout,
            env_kwargs=cfg.world.env_kwargs(),
            demo_kwargs={"noise": cfg.noise, "goal_steps": cfg.goal_steps, "goals": tuple(cfg.goals) or None,
                         "min_segment": cfg.min_segment, "focus": focus, "sight": cfg.sight,
                         "appetite": cfg.appetite, "stop_at_full": cfg.stop_at_full},
            crf=cfg.crf, preset=cfg.preset,
            driver=make_driver(cfg, focus, cfg.seed + i) if cfg.driver else None, driver_share=cfg.driver_share)
    except Exception as e:  # noqa: BLE001 - one bad episode never stops the job
        return {"name": name, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    meta = Path(cfg.out) / "meta" / f"{name}.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    tmp = meta.with_suffix(".json.part")
    tmp.write_text(json.dumps(rec.to_dict()))
    os.replace(tmp, meta)
    return rec.to_dict()


def _is_done(cfg: RecordConfig, name: str) -> bool:
    root = Path(cfg.out)
    sub = root / "contractor" if cfg.layout == "contractor" else root
    video, jsonl = episode_paths(sub, name, cfg.layout)
    return (root / "meta" / f"{name}.json").exists() and video.exists() and jsonl.exists()


def record_episodes(cfg: RecordConfig) -> dict:
    """Record `cfg.episodes` episodes (skipping finished ones), write index/captions/summary; returns summary."""
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / "record_config.yaml")
    names = [episode_name(cfg, i) for i in range(cfg.episodes)]
    todo = [i for i, n in enumerate(names) if cfg.overwrite or not _is_done(cfg, n)]
    if todo:
        check_driver(cfg)
    cfg_dict = to_dict(cfg)
    results: dict[str, dict] = {}
    t0 = time.perf_counter()
    meter = Meter("record", "episodes", len(todo), write=None if cfg.progress else lambda text: None)

    def done(res: dict) -> None:
        results[res["name"]] = res
        frames = sum(r.get("n_frames", 0) for r in results.values())
        meter.update(len(results), f"frames {frames:,}", rate(frames / max(meter.elapsed_s(), 1e-9), "frames"))

    if todo and cfg.use_ray:
        ray = connect(log_to_driver=False)
        remote = ray.remote(_record_one).options(num_cpus=cfg.num_cpus, max_retries=1)
        pending = [remote.remote(cfg_dict, i) for i in todo]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                done(ray.get(ref))
    else:
        for i in todo:
            done(_record_one(cfg_dict, i))
    wall = time.perf_counter() - t0

    records, failed = [], []
    for name in names:
        res = results.get(name)
        if res is None:  # recorded by an earlier run
            meta = root / "meta" / f"{name}.json"
            if meta.exists():
                res = json.loads(meta.read_text())
        if res is None or "error" in res:
            failed.append({"name": name, "error": (res or {}).get("error", "missing")})
            continue
        records.append(res)
    _write_outputs(cfg, root, records)
    summary = _summary(cfg, records, failed, wall, len(todo))
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _write_outputs(cfg: RecordConfig, root: Path, records: list[dict]) -> None:
    if cfg.layout == "contractor":
        index = {"basedir": str(root.resolve()) + "/", "relpaths": [r["video"] for r in records]}
        (root / "index.json").write_text(json.dumps(index, indent=1))
    with open(root / "captions.jsonl.part", "w") as f:
        for r in records:
            for s in r["segments"]:
                f.write(json.dumps({"episode": r["name"], "video": r["video"], "actions": r["actions"], **s}) + "\n")
    os.replace(root / "captions.jsonl.part", root / "captions.jsonl")


def _summary(cfg: RecordConfig, records: list[dict], failed: list[dict], wall: float, n_new: int) -> dict:
    seen = Counter()  # episodes in which each achievement happened
    total = Counter()
    for r in records:
        for k, v in r["achievements"].items():
            seen[k] += 1
            total[k] += v
    frames = sum(r["n_frames"] for r in records)
    cpu = sum(r.get("cpu_seconds", 0.0) for r in records)
    return {
        "out": str(Path(cfg.out).resolve()),
        "layout": cfg.layout,
        "episodes": len(records),
        "failed": failed,
        "recorded_now": n_new,
        "frames": frames,
        "null_frames": sum(r["n_null"] for r in records),
        "deaths": sum(bool(r.get("died")) for r in records),
        "segments": sum(len(r["segments"]) for r in records),
        "segments_succeeded": sum(s["success"] for r in records for s in r["segments"]),
        "achievements_seen": dict(sorted(seen.items())),
        "achievement_counts": dict(sorted(total.items())),
        "wall_seconds": round(wall, 2),
        "episodes_per_s": round(n_new / wall, 4) if n_new and wall > 0 else None,
        "cpu_seconds_per_episode": round(cpu / len(records), 2) if records else None,
        "frames_per_cpu_second": round(frames / cpu, 1) if cpu > 0 else None,
        "hours_of_gameplay": round(frames / 20 / 3600, 3),
    }


def format_summary(s: dict) -> str:
    ach = ", ".join(f"{k} {v}/{s['episodes']}" for k, v in s["achievements_seen"].items()) or "none"
    lines = [
        f"recorded {s['episodes']} episodes ({s['recorded_now']} now, {len(s['failed'])} failed) in "
        f"{s['wall_seconds']} s -> {s['out']} [{s['layout']} layout]",
        f"frames {s['frames']} ({s['hours_of_gameplay']} h at 20 fps), null frames {s['null_frames']}, "
        f"deaths {s['deaths']}, goal segments {s['segments']} ({s['segments_succeeded']} achieved)",
        f"speed: {s['frames_per_cpu_second']} recorded frames per CPU-second, "
        f"{s['cpu_seconds_per_episode']} CPU-s per episode",
        f"achievements seen (episodes): {ach}",
    ]
    lines += [f"FAILED {f['name']}: {f['error']}" for f in s["failed"]]
    return "\n".join(lines)


def _run(cfg: RecordConfig) -> int:
    summary = record_episodes(cfg)  # saves the config beside the recordings itself (also when called as a library)
    print(format_summary(summary), flush=True)
    return 1 if summary["failed"] else 0


JOB = Job("record", RecordConfig, _run, summary="Record scripted-demonstrator episodes of the embedded world "
          "in the contractor format (exit 1 if an episode failed).",
          examples="steve1 record out=data/world episodes=16 max_steps=1000 world.tree_logs=4")


def main(argv: list[str] | None = None) -> int:
    """`steve1 record [--config a.yaml ...] [key=value ...]`; exit code 1 if an episode failed."""
    return run_job(JOB, argv)


__all__ = ["RecordConfig", "record_episodes", "format_summary", "main", "EpisodeRecord"]
