"""How well does a relabeling scheme tell a frame what its demonstrator was doing? Measured on a recording.

A goal-conditioned policy learns "given goal clip g, act like the frames that were given g". Whether that
teaches "chop a tree" depends on which frames get the wood clip: the demonstrator's own captioned segments
(`meta/<episode>.json`, never seen by training) say what it was doing at each frame. For each scheme this prints,
per evaluated goal, the share of the goal's segment frames whose goal clip (the 16 frames ending at the goal
timestep) shows the same goal (the achievement it ends on, else the segment most of its frames lie in), and how many of the frames that gather wood right before a
table segment are given the table's clip (what lets a table prompt ask for the wood it needs).

    python benchmarks/goal_labels.py --recording runs/release/world [--horizons 16 40] [--episodes 100]

Schemes: STEVE-1's spaced hindsight goals (15-40 frames, the debug preset's, and the original 15-200), and event
goals (`goal_event_horizon`) with each `goal_event_pick`. Uses the training code's own functions
(`steve1_ray.train.relabel`, `steve1_ray.data.pipeline.event_frames` / `event_links`); no video is decoded.
"""
from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np

FIVE = ("collect_wood", "collect_sapling", "collect_drink", "eat_cow", "place_table")


def load(recording: Path, limit: int | None) -> list[dict]:
    from steve1_ray.data.contractor import convert_actions, parse_jsonl
    from steve1_ray.data.pipeline import event_frames, event_links

    episodes = []
    for meta_file in sorted((recording / "meta").glob("*.json"))[:limit]:
        meta = json.loads(meta_file.read_text())
        path = recording / meta["actions"]
        steps = parse_jsonl(path.read_text(), str(path))  # read once: the conversion and the counters below
        conv = convert_actions(steps, where=str(path))
        keep = np.flatnonzero(conv.keep)  # frame i is jsonl line keep[i]
        achieved = np.full(len(conv.keep), "", object)  # per line: the achievement whose counter rose there
        prev: dict = {}
        for i, line in enumerate(steps):
            stats = line.get("stats") or {}
            rose = sorted(k.split(":")[-1] for k, v in stats.items() if v > prev.get(k, 0))
            achieved[i] = rose[0] if rose else ""
            prev = stats
        seg_of_line = np.full(len(conv.keep), "", object)
        for s in meta["segments"]:
            seg_of_line[s["start"]:s["end"]] = s["goal"]
        n = len(keep)
        episodes.append({"n": n, "seg": seg_of_line[keep], "achieved": achieved[keep],
                         "events": np.asarray(event_frames(conv, n), np.int64),
                         "links": np.asarray(event_links(conv, n), np.int64)})
    return episodes


def clip_goal(seg: np.ndarray, achieved: np.ndarray, goal_t: np.ndarray, window: int = 16) -> np.ndarray:
    """What the clip ending on each goal timestep shows: the achievement its last two frames first show (an event
    clip ends one frame after the first frame that shows the event; with our recorder a line's stats are the
    state its frame shows), else the demonstrator goal of most of its 16 frames."""
    n = len(seg)
    last = np.clip(goal_t, 0, n - 1)
    before = np.clip(goal_t - 1, 0, n - 1)
    event = np.where(achieved[last] != "", achieved[last], achieved[before])
    return np.where(event != "", event, clip_segment(seg, goal_t, window))


def clip_segment(seg: np.ndarray, goal_t: np.ndarray, window: int = 16) -> np.ndarray:
    """The demonstrator goal of most of the 16 frames of the clip ending on each goal timestep."""
    names, codes = np.unique(seg, return_inverse=True)
    n = len(seg)
    idx = np.clip(goal_t[:, None] - np.arange(window)[None, :], 0, n - 1)  # (T, 16) frames of each clip
    counts = np.zeros((len(goal_t), len(names)), np.int64)
    np.add.at(counts, (np.arange(len(goal_t))[:, None].repeat(window, 1), codes[idx]), 1)
    return names[counts.argmax(1)]


def score(episodes: list[dict], labels) -> dict:
    hit, tot, link = collections.Counter(), collections.Counter(), [0, 0]
    for k, ep in enumerate(episodes):
        n, seg = ep["n"], ep["seg"]
        goal_t = labels(ep, np.random.default_rng([0, k]))
        shown = clip_goal(seg, ep["achieved"], goal_t)
        for goal in FIVE:
            mine = seg == goal
            tot[goal] += int(mine.sum())
            hit[goal] += int((shown[mine] == goal).sum())
        # frames of a wood segment that runs straight into a table segment
        nxt = np.append(seg[1:], "")
        ends = np.flatnonzero((seg == "collect_wood") & (nxt == "place_table"))
        for end in ends:
            start = end
            while start > 0 and seg[start - 1] == "collect_wood":
                start -= 1
            link[1] += end + 1 - start
            link[0] += int((shown[start:end + 1] == "place_table").sum())
    return {**{g: round(hit[g] / max(1, tot[g]), 2) for g in FIVE},
            "all five": round(sum(hit.values()) / max(1, sum(tot.values())), 2),
            "wood->table": f"{link[0]}/{link[1]} ({link[0] / max(1, link[1]):.0%})"}


def main(argv=None) -> None:
    from steve1_ray.train.relabel import EVENT_PICKS, event_goals, goal_index_per_timestep, goal_timesteps

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recording", required=True, help="a `steve1 record` folder (meta/ and contractor/)")
    ap.add_argument("--horizons", type=int, nargs="+", default=[16, 40])
    ap.add_argument("--episodes", type=int, default=None, help="the first N episodes only")
    args = ap.parse_args(argv)
    episodes = load(Path(args.recording), args.episodes)

    def spaced(lo, hi):
        return lambda ep, rng: goal_index_per_timestep(goal_timesteps(ep["n"], lo, hi, rng), np.arange(ep["n"]))

    def evented(h, pick):
        def f(ep, rng):
            t = np.arange(ep["n"])
            return event_goals(spaced(15, 40)(ep, rng), t, ep["events"], h, ep["n"], pick, ep["links"])
        return f

    schemes = {"hindsight 15-40": spaced(15, 40), "hindsight 15-200": spaced(15, 200)}
    schemes.update({f"events h{h} {p}": evented(h, p) for h in args.horizons for p in EVENT_PICKS})
    print(f"{len(episodes)} episodes, {sum(e['n'] for e in episodes):,} frames of {args.recording}\n")
    print("| scheme | " + " | ".join(FIVE) + " | all five | wood gathered for a table, given the table |")
    print("|---|" + "---|" * (len(FIVE) + 2))
    for name, labels in schemes.items():
        r = score(episodes, labels)
        print(f"| {name} | " + " | ".join(str(r[g]) for g in FIVE) + f" | {r['all five']} | {r['wood->table']} |")


if __name__ == "__main__":
    main()
