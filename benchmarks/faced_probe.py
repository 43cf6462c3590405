"""Does a policy's image encoder know what the player faces? A linear probe of its image features for the faced tile.

The scripted demonstrator plays embedded-world episodes (free play and tasks, seeds 600, 601, ...); every frame is
labelled with the tile the player faces (tree, stone, water, grass, a cow, sand, other) and encoded by the policy's
image encoder (`net.img_process`: ImpalaCNN and its dense layer, before the goal is added). A multinomial logistic
regression is fitted on the first `--train` episodes and tested on the rest, by episode. Reported: held-out accuracy
overall and per tile, and the commonest confusions. A preset name with no weights (`--policy debug`) probes a
randomly initialised encoder: the floor.

    python benchmarks/faced_probe.py --policy <run>/train/steve1/checkpoint_<time>
    python benchmarks/faced_probe.py --policy debug      # the floor

Session 28 (benchmarks/RESULTS.md): the committed quick-start policy 0.61 (tree 0.51, cow 0.21, stone 0.05), a
random debug encoder 0.48: the debug preset's encoder barely encodes the faced tile, and its `do` does not depend on it.
"""
from __future__ import annotations

import argparse
import collections
import json

import numpy as np

TILES = ("tree", "stone", "water", "grass", "cow", "sand", "other")
EPISODES = (None, "collect_wood", "collect_drink", "eat_cow", None, "collect_wood", "collect_stone", None)


def faced_tile(env) -> str:
    _, (material, obj) = env.faced
    if type(obj).__name__ == "Cow":
        return "cow"
    return material if material in TILES else "other"


def collect(env, focuses=EPISODES, steps: int = 300, seed: int = 600):
    """(frames (N, 128, 128, 3) uint8 as the policy sees them, labels (N,) indices into TILES, episode (N,))."""
    from steve1_ray.agent import resize_pov
    from steve1_ray.world.demonstrators import Demonstrator

    frames, labels, episode = [], [], []
    for k, focus in enumerate(focuses):
        demo = Demonstrator(env, seed=seed + k, focus=focus)
        obs = env.reset(seed=seed + k)
        demo.reset()
        for _ in range(steps):
            frames.append(resize_pov(obs["pov"]))
            labels.append(TILES.index(faced_tile(env)))
            episode.append(k)
            obs, _, done, _ = env.step(demo.act())
            if done:
                break
    return np.stack(frames), np.array(labels), np.array(episode)


def features(policy, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """The policy's image features (N, hidsize) of frames (N, 128, 128, 3) uint8."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(frames[i:i + batch]).float() / 255.0
            out.append(policy.net.img_process(x).float().numpy())
    return np.concatenate(out)


def probe(feats: np.ndarray, labels: np.ndarray, train: np.ndarray, n_classes: int = len(TILES),
          steps: int = 500, seed: int = 0) -> dict:
    """Fit a linear classifier on feats[train] (standardised with the training rows' statistics), test on the
    rest. Returns {"accuracy", "per_class" {class index: accuracy} (classes with > 3 test rows), "confusions"
    [(true, predicted, count)], "n_train", "n_test"}."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    x = torch.as_tensor(feats, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    tr, te = torch.as_tensor(train, dtype=torch.bool), ~torch.as_tensor(train, dtype=torch.bool)
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    x = (x - mu) / sd
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(x[tr] @ w + b, y[tr]) + 1e-3 * (w ** 2).sum()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = (x[te] @ w + b).argmax(1)
    yt = y[te]
    per = {c: float((pred[yt == c] == c).float().mean()) for c in range(n_classes) if int((yt == c).sum()) > 3}
    conf = collections.Counter((int(a), int(p)) for a, p in zip(yt.tolist(), pred.tolist()) if a != p)
    return {"accuracy": float((pred == yt).float().mean()) if len(yt) else float("nan"), "per_class": per,
            "confusions": [(a, p, n) for (a, p), n in conf.most_common(5)], "n_train": int(tr.sum()),
            "n_test": int(te.sum())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="checkpoint folder, .model (with --weights) or a preset name")
    ap.add_argument("--weights")
    ap.add_argument("--steps", type=int, default=300, help="frames per episode at most")
    ap.add_argument("--train", type=int, default=6, help="the first this many of the 8 episodes fit the probe")
    ap.add_argument("--tree-logs", type=int, default=4)
    args = ap.parse_args(argv)
    import torch

    from steve1_ray.models.loading import load_policy_spec
    from steve1_ray.world.crafter_env import CrafterEnv

    torch.set_grad_enabled(False)
    policy = load_policy_spec(args.policy, args.weights, seed=0)
    env = CrafterEnv(zombie_rate=0.2, target_outline=True, tree_logs=args.tree_logs)
    frames, labels, episode = collect(env, steps=args.steps)
    out = probe(features(policy, frames), labels, episode < args.train)
    print(json.dumps({"policy": args.policy, "labels": {TILES[k]: int(v) for k, v in
                                                        sorted(collections.Counter(labels.tolist()).items())},
                      "accuracy": round(out["accuracy"], 3),
                      "per_tile": {TILES[c]: round(a, 2) for c, a in out["per_class"].items()},
                      "confusions": [[TILES[a], TILES[p], n] for a, p, n in out["confusions"]],
                      "n_train": out["n_train"], "n_test": out["n_test"]}, indent=1))


if __name__ == "__main__":
    main()
