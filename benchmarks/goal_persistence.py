"""How often does hindsight relabeling keep a frame's goal on the activity the frame is doing?

For each frame inside a segment of goal X in a recording's `captions.jsonl` (the scripted demonstrator's own
goal labels, docs/world.md), the share of its possible goal frames t + k, k = min..max (the training config's
`min_btwn_goals`..`max_btwn_goals`), that lie inside a segment of the same goal X. A goal with a high share is
one whose future clips show the same activity; a low share means its frames are mostly conditioned on clips of
something else.

    python benchmarks/goal_persistence.py <record out>/captions.jsonl [--min 15] [--max 40]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict


def persistence(lines, lo: int, hi: int) -> dict[str, dict]:
    """goal -> {frames, share, segments, median_len} over the caption records in `lines`."""
    segs: dict[str, list] = defaultdict(list)
    for line in lines:
        if line.strip():
            r = json.loads(line)
            segs[r["episode"]].append((int(r["start"]), int(r["end"]), r["goal"]))
    share, frames, lengths = defaultdict(float), defaultdict(int), defaultdict(list)
    for episode in segs.values():
        label = {}
        for start, end, goal in episode:
            lengths[goal].append(end - start)
            label.update({t: goal for t in range(start, end)})
        for t, goal in label.items():
            ahead = [label[u] for u in range(t + lo, t + hi + 1) if u in label]
            if ahead:
                frames[goal] += 1
                share[goal] += sum(g == goal for g in ahead) / len(ahead)
    return {g: {"frames": frames[g], "share": share[g] / frames[g], "segments": len(lengths[g]),
                "median_len": sorted(lengths[g])[len(lengths[g]) // 2]} for g in frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("captions")
    ap.add_argument("--min", type=int, default=15)
    ap.add_argument("--max", type=int, default=40)
    a = ap.parse_args()
    with open(a.captions) as f:
        rows = persistence(f, a.min, a.max)
    print(f"| goal | frames | goal frames {a.min}-{a.max} ahead in a segment of the same goal "
          "| segments | median length |")
    print("|---|---|---|---|---|")
    for g, r in sorted(rows.items(), key=lambda kv: -kv[1]["share"]):
        print(f"| {g} | {r['frames']} | {r['share']:.2f} | {r['segments']} | {r['median_len']} |")


if __name__ == "__main__":
    main()
