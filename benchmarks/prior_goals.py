"""Where do a prompt's goals land? The prior's samples beside the visual goals the policy was trained on.

For each evaluated prompt, the prior is sampled as the evaluation samples it (one seeded sample per episode,
`--samples` of them; and z = 0). Each sample is compared by cosine similarity with the *goal centroids*: the mean
visual embedding of the clips that end each captioned, achieved segment of the recording (the pairs the prior
is trained on, `train.prior.world_pairs`). Reported per prompt: the share of samples whose nearest centroid
is the prompt's own goal, the mean cosine to its own centroid and to the nearest other one (and which goal that is), and the goals the
samples land on instead.

    python benchmarks/prior_goals.py --world <run>/world --data <run>/shards \\
        --embedder <run>/embedder/mineclip.pth --prior <run>/prior/prior.pt [--samples 12] [--heldout]

`--heldout` adds the held-out phrasings of the five goals (no caption, no template phrase) and a summary: the share
of samples that land on their own goal, for the captions and for the held-out phrasings.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np

from steve1_ray.world.demonstrators import GOALS

# the evaluated goals and their prompts (each goal's first caption, as configs/eval/crafter.yaml lists them)
PROMPTS = {g: GOALS[g].captions[0] for g in ("collect_wood", "collect_sapling", "collect_drink", "eat_cow",
                                              "place_table")}


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def centroids(visual: np.ndarray, goals: list[str]) -> tuple[list[str], np.ndarray]:
    """Goal names (sorted) and the unit-length mean of each goal's unit-length visual embeddings."""
    names = sorted(set(goals))
    g = np.asarray(goals)
    return names, unit(np.stack([unit(visual[g == n]).mean(0) for n in names]))


def landing(samples: np.ndarray, names: list[str], cents: np.ndarray, own: str) -> dict:
    """Nearest-centroid statistics of `samples` (K, D) for the goal `own`."""
    sims = unit(samples) @ cents.T  # (K, G)
    nearest = [names[i] for i in sims.argmax(1)]
    o = names.index(own)
    others = np.delete(sims, o, axis=1)
    rest = [n for n in names if n != own]
    return {"own_share": float(np.mean([n == own for n in nearest])), "cos_own": float(sims[:, o].mean()),
            "cos_best_other": float(others.max(1).mean()), "closest_other": rest[int(others.mean(0).argmax())],
            "lands_on": dict(Counter(nearest).most_common(3))}


def phrasings(heldout: bool) -> list[tuple[str, str, str]]:
    """(kind, goal, phrase) to sample: each evaluated goal's prompt ("caption"), and with `heldout` its held-out
    phrasings too (`steve1_ray.world.phrases.HELDOUT`: no caption, no template phrase)."""
    from steve1_ray.world.phrases import HELDOUT

    return [row for goal, prompt in PROMPTS.items()
            for row in [("caption", goal, prompt)] + [("heldout", goal, h) for h in (HELDOUT[goal] if heldout else ())]]


def own_share_summary(out: dict, rows: list[tuple[str, str, str]]) -> dict:
    """{"<kind>_own_share": the mean share of samples landing on their own goal} over the phrases of each kind."""
    kinds = dict.fromkeys(kind for kind, _, _ in rows)
    return {f"{k}_own_share": round(float(np.mean([out[p]["samples"]["own_share"] for kk, _, p in rows if kk == k])), 3)
            for k in kinds}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", required=True, help="the recording (captions.jsonl)")
    ap.add_argument("--data", required=True, help="its shard dataset (the visual embeddings)")
    ap.add_argument("--embedder", required=True)
    ap.add_argument("--prior", required=True)
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--heldout", action="store_true",
                    help="also every held-out phrasing of the five goals (steve1_ray.world.phrases.HELDOUT), and a "
                         "summary line: the share of samples landing on their own goal, captions vs held-out")
    args = ap.parse_args(argv)

    import torch

    from steve1_ray.models.loading import load_embedder
    from steve1_ray.models.prior import load_prior
    from steve1_ray.train.prior import PriorConfig, world_pairs

    torch.set_grad_enabled(False)
    _, visual, texts = world_pairs(PriorConfig(world=args.world, data=args.data, mineclip_path=args.embedder))
    goal_of = {c: g.name for g in GOALS.values() for c in g.captions}
    goals = [goal_of.get(t, "?") for t in texts]
    names, cents = centroids(visual, goals)
    embedder, prior = load_embedder(args.embedder), load_prior(args.prior).eval()
    out, rows = {}, phrasings(args.heldout)
    for _, goal, phrase in rows:
        text = embedder.encode_text([phrase]).float()
        sampled = np.stack([prior.sample(text, seed=k).float().numpy()[0] for k in range(args.samples)])
        z0 = prior.sample(text, deterministic=True).float().numpy()
        out[phrase] = {"samples": landing(sampled, names, cents, goal), "z0": landing(z0, names, cents, goal),
                       "text": landing(text.numpy(), names, cents, goal)}
    if args.heldout:
        out["summary"] = own_share_summary(out, rows)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
