"""Which goals does a recording teach as standing still? The share of idle frames in each goal's segments.

A frame is idle when no key and no mouse button is pressed (nothing, or only a camera move: in the embedded
world the camera does nothing). Guidance multiplies each action's probability by (p(a|goal) / p(a|no goal))^s,
so a goal whose segments idle more than the recording as a whole teaches a guided agent to stand still.
Reads a recording's `captions.jsonl` (the demonstrator's goal segments) and its contractor `.jsonl` actions.

    python benchmarks/segment_idle.py <record out>   # the folder with captions.jsonl and contractor/
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from steve1_ray.data.contractor import parse_jsonl
from steve1_ray.train.embedder import read_captions


def is_idle(record: dict) -> bool:
    """A contractor action record that presses nothing (a camera move alone counts as idle)."""
    return not record["keyboard"]["keys"] and not record["mouse"]["buttons"]


def idle_shares(world: Path) -> tuple[dict[str, dict], float]:
    """goal -> {frames, idle}, and the idle share over all captioned frames."""
    actions: dict[str, list[dict]] = {}
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for seg in read_captions(world / "captions.jsonl"):
        if seg["actions"] not in actions:  # one contractor file per episode, read once
            path = world / seg["actions"]
            actions[seg["actions"]] = parse_jsonl(path.read_text(), str(path))
        for rec in actions[seg["actions"]][seg["start"]:seg["end"]]:
            counts[seg["goal"]][0] += is_idle(rec)
            counts[seg["goal"]][1] += 1
    idle, total = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    out = {g: {"frames": n, "idle": i / n} for g, (i, n) in counts.items() if n}
    return out, (idle / total if total else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("world", type=Path, help="a `steve1 record` output folder")
    args = ap.parse_args()
    shares, overall = idle_shares(args.world)
    print(f"all captioned frames: idle {overall:.3f}")
    for goal, s in sorted(shares.items(), key=lambda kv: -kv[1]["frames"]):
        print(f"{goal:20s} frames {s['frames']:6d}  idle {s['idle']:.3f}")


if __name__ == "__main__":
    main()
