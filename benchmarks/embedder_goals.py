"""Which goals can a world embedder tell apart? Per-goal clip→goal accuracy on held-out episodes, side by side.

The embedder job reports one clip→goal accuracy over all goals. A goal the embedder cannot see (its clips look like
another goal's) gives the policy a goal that means "be where that goal happens", not "do it". This cuts the clips
exactly as `steve1 train-embedder` does (the config file and overrides given, the same seed and episode split) and,
for each embedder, prints the share of each goal's validation clips whose nearest goal prototype (the mean text
embedding of the goal's captions) is that goal, and for the five evaluated goals what they are mistaken for.

    python benchmarks/embedder_goals.py --recordings runs/release/world \
        --embedder released=steve1_ray/released/world/mineclip.pth --embedder wide=runs/emb_wide/mineclip.pth

The clips' crop is each embedder's own (it is in the file's config); the clip set (frames, goals, split) is the
job's for `--config` (default `world`), independent of the crop.
"""
from __future__ import annotations

import argparse
import collections

import numpy as np

FIVE = ("collect_wood", "collect_sapling", "collect_drink", "eat_cow", "place_table")


def per_goal(model, data) -> tuple[dict, dict]:
    """({goal: accuracy}, {goal: Counter of predicted goals}) on `data` (a ClipSet)."""
    import torch
    import torch.nn.functional as F

    from steve1_ray.train.embedder import embed_clipset, nearest_goal

    model.eval()
    with torch.no_grad():
        v = F.normalize(embed_clipset(model, data), dim=-1)
        pred = nearest_goal(v, F.normalize(model.encode_text(data.texts), dim=-1), data.goals)
    names, goals = sorted(set(data.goals)), np.asarray(data.goals)
    acc = {g: float((pred[goals == g] == g).mean()) for g in names}
    confused = {g: collections.Counter(pred[goals == g]) for g in names}
    return acc, confused


def main(argv=None) -> int:
    from steve1_ray.config import load_config, preset_path
    from steve1_ray.models.loading import load_embedder
    from steve1_ray.train.embedder import EmbedderConfig, build_clips, split_train_val_select

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recordings", required=True)
    p.add_argument("--embedder", action="append", required=True, help="name=path/to/mineclip.pth (repeatable)")
    p.add_argument("--config", default="world", help="the embedder job's config (the clip cut and the split)")
    args = p.parse_args(argv)

    cfg = load_config(EmbedderConfig, [preset_path("embedder", args.config)], [f"recordings={args.recordings}"])
    data = build_clips(cfg, cfg.model_config().window)  # the job's clip length
    _, val, _ = split_train_val_select(data, cfg)
    counts = collections.Counter(val.goals)
    print(f"{len(val)} validation clips from {len(set(val.episodes))} held-out episodes "
          f"(seed {cfg.seed}); chance 1/{len(counts)}")
    rows = {}
    for spec in args.embedder:
        name, _, path = spec.partition("=")
        model = load_embedder(path)
        rows[name] = per_goal(model, val)
    names = list(rows)
    print("\n| goal | clips | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for g in sorted(counts, key=lambda g: (g not in FIVE, g)):
        print(f"| {g} | {counts[g]} | " + " | ".join(f"{rows[n][0][g]:.2f}" for n in names) + " |")
    for n in names:
        print(f"\n{n}: what the five evaluated goals' clips are taken for")
        for g in FIVE:
            if g in rows[n][1]:
                top = ", ".join(f"{k} {c / counts[g]:.0%}" for k, c in rows[n][1][g].most_common(3))
                print(f"- {g}: {top}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
