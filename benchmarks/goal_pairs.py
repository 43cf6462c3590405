"""What the training data pairs each goal with: the goal a frame is trained on against what the demonstrator does there.

For every kept frame of a recording, the goal the training loader gives it (`steve1 train goal_segments=`: a reached
segment's end clip, or the next goal's when the segment gathers what that one needs; elsewhere the loader's hindsight
goal, `steve1_ray.train.relabel`, drawn once here; event goals, `goal_event_horizon`, used by the quick start's
fine-tune but not by the release's goal stage, are not modelled), that goal's nearest *caption centroid* (the mean
visual embedding of the clips that end each captioned, achieved segment, as `benchmarks/prior_goals.py` computes
them, where the prior puts a prompt's goal), and the goal the demonstrator itself pursues at that frame:

- `given`: rows = the nearest centroid of the goal given, entries = share of those frames on which the demonstrator
  pursues each goal (what a policy learns to do when handed a goal near that centroid), and how many frames;
- `pursued`: rows = what the demonstrator pursues, entries = the centroids its frames' goals land on (whether a
  behaviour is taught under its own goal at all);
- `cosines`: between the evaluated goals' caption centroids (two goals at 0.96 are one goal to a policy).

    python benchmarks/goal_pairs.py --world <recording> --data <its shards> --embedder <mineclip.pth> [--json out.json]

The shards must have been embedded with `--embedder` (the release's or the quick start's dataset).
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prior_goals import PROMPTS, centroids, unit  # noqa: E402

SHOWN = [*PROMPTS, "explore"]


def goal_pairs(world: str, data: str, embedder: str, lo: int = 15, hi: int = 40, seed: int = 0) -> dict:
    """{"given": {centroid: {"frames": n, <goal>: share}}, "pursued": {goal: {"frames": n, <centroid>: share}},
    "cosines": {goal: {goal: cosine}}}."""
    from steve1_ray.data import shards
    from steve1_ray.data.contractor import kept_index
    from steve1_ray.train.data import recording_keys, recording_meta, segment_goal_frames
    from steve1_ray.train.prior import PriorConfig, world_pairs
    from steve1_ray.world.demonstrators import GOALS

    _, visual, texts = world_pairs(PriorConfig(world=world, data=data, mineclip_path=embedder))
    goal_of = {c: g.name for g in GOALS.values() for c in g.captions}
    names, cents = centroids(visual, [goal_of.get(t, "?") for t in texts])
    keys = list(shards.list_episodes(data))
    segment_goal = segment_goal_frames(world, keys)
    metas = recording_meta(world, "--world")
    rng = np.random.default_rng(seed)
    pairs: collections.Counter = collections.Counter()  # (centroid of the goal given, goal pursued)
    for key, name in sorted(recording_keys(metas, keys, world, "--world").items()):
        meta = metas[name]
        frame_of, keep = kept_index(Path(world) / meta["actions"])
        pursued = np.full(int(keep.sum()), "none", object)
        for s in meta.get("segments") or []:
            lines = np.arange(max(int(s["start"]), 0), min(int(s["end"]), len(keep)))
            pursued[frame_of[lines[keep[lines]]]] = s["goal"]
        ep = shards.load_episode(data, key.rpartition("\t")[2], columns=["embeds"])
        nearest = np.asarray(names)[(unit(np.asarray(ep["embeds"], np.float32)) @ cents.T).argmax(1)]
        pairs += episode_pairs(pursued, nearest, segment_goal[key], rng, lo, hi)
    shown = [g for g in PROMPTS if g in names]
    sims = cents @ cents.T
    cosines = {a: {b: round(float(sims[names.index(a), names.index(b)]), 3) for b in shown} for a in shown}
    return {**tables(pairs), "cosines": cosines}


def episode_pairs(pursued: np.ndarray, nearest: np.ndarray, given: np.ndarray, rng: np.random.Generator,
                  lo: int, hi: int) -> collections.Counter:
    """One episode's (centroid of the goal given, goal pursued) counts. Per kept frame t: `pursued[t]` the
    demonstrator's goal, `nearest[t]` the centroid nearest the clip ending at t, `given[t]` the frame whose clip is
    t's segment goal or -1. Frames without one (or with one before the first whole clip) get the training loader's
    hindsight goal: goal timesteps spaced lo..hi-1 frames apart and each frame the first with t <= goal + 1
    (`steve1_ray.train.relabel`, drawn once per episode here). Event goals (`goal_event_horizon`, the quick start's
    fine-tune) are not modelled."""
    from steve1_ray.train.relabel import NONE_EMBED_OFFSET, goal_index_per_timestep, goal_timesteps

    pairs: collections.Counter = collections.Counter()
    n = min(len(pursued), len(nearest), len(given))
    if n == 0:
        return pairs
    hindsight = goal_index_per_timestep(goal_timesteps(n, lo, hi, rng), np.arange(n))
    own = (np.asarray(given[:n]) >= NONE_EMBED_OFFSET) & (np.asarray(given[:n]) < n)
    for t, g in enumerate(np.where(own, given[:n], hindsight)):
        pairs[(str(nearest[int(g)]), str(pursued[t]))] += 1
    return pairs


def tables(pairs: collections.Counter) -> dict:
    """Both tables of the module docstring from (centroid given, goal pursued) counts."""
    def table(rows: int) -> dict:  # rows=0: by the centroid given; rows=1: by the goal pursued
        out: dict = {}
        for pair, count in pairs.items():
            out.setdefault(pair[rows], collections.Counter())[pair[1 - rows]] += count
        return {r: {"frames": sum(c.values()), **{k: round(v / sum(c.values()), 3) for k, v in c.most_common()}}
                for r, c in sorted(out.items())}

    return {"given": table(0), "pursued": table(1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", required=True, help="the recording (`steve1 record out=`)")
    ap.add_argument("--data", required=True, help="its shard dataset, embedded with --embedder")
    ap.add_argument("--embedder", required=True)
    ap.add_argument("--min", type=int, default=15, help="hindsight goals: min_btwn_goals")
    ap.add_argument("--max", type=int, default=40,
                    help="hindsight goals: max_btwn_goals (exclusive, as the loader draws)")
    ap.add_argument("--json", help="write both tables here")
    args = ap.parse_args(argv)
    out = goal_pairs(args.world, args.data, args.embedder, args.min, args.max)
    for title, key in (("goal given (nearest centroid) -> what the demonstrator pursues there", "given"),
                       ("what the demonstrator pursues -> where its frames' goals land", "pursued")):
        print(f"\n{title}")
        for row in SHOWN:
            if row in out[key]:
                r = out[key][row]
                top = [(k, v) for k, v in r.items() if k != "frames"][:4]
                print(f"  {row:16s} {r['frames']:7d} frames  " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    print("\ncosine between the caption centroids")
    for a, row in out["cosines"].items():
        print(f"  {a:16s} " + " ".join(f"{b[:12]} {v:.2f}" for b, v in row.items() if b != a))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
