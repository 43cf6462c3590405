"""Does a policy's image encoder know what the player faces? A linear probe of its image features for the faced tile.

The scripted demonstrator plays embedded-world episodes (free play and tasks, seeds 600, 601, ...); every frame is
labelled with the tile the player faces (tree, stone, water, grass, a cow, sand, other) and encoded by the policy's
image encoder (`net.img_process`: ImpalaCNN and its dense layer, before the goal is added). A multinomial logistic
regression is fitted on the first `--train` episodes and tested on the rest, by episode. Reported: held-out accuracy
overall and per tile, the commonest confusions, and on the held-out episodes whether the policy's `do` depends on the
faced tile as the demonstrator's does (`do_by_tile`: the unconditioned policy's P(do) per faced tile, teacher-forced,
beside the demonstrator's share of `do`). A preset name with no weights (`--policy debug`) probes a
randomly initialised encoder: the floor.

    python benchmarks/faced_probe.py --policy <run>/train/steve1/checkpoint_<time>
    python benchmarks/faced_probe.py --policy debug      # the floor
    python benchmarks/faced_probe.py --policy <checkpoint> --episodes 16 --train 10
    # and which side a cow (a tree) beside the player is on, from the features and from the fovea's raw pixels,
    # on episodes every other one of which is a cow or a wood task (session 31's set-up: seeds 900-939)
    python benchmarks/faced_probe.py --policy <checkpoint> --episodes 40 --train 28 --adjacent cow,tree \
        --seed 900 --focuses none,eat_cow,none,collect_wood

Session 28 (benchmarks/RESULTS.md): the committed quick-start policy 0.61 (tree 0.51, cow 0.21, stone 0.05), a
random debug encoder 0.48: the debug preset's encoder barely encodes the faced tile, and its `do` does not depend on it.
Session 29: after 65,536 frames of unconditioned behaviour cloning the debug policy presses `do` at 0.14-0.21 whatever
it faces (the demonstrator: grass 0.08, a tree 0.62), the `fovea` preset at 0.07-0.09 on grass and sand and 0.29-0.44
at a tree, water, stone or a cow; probe 0.55 against 0.75.
`--adjacent` (session 45; session 31 measured it with a script of its own): on the frames where the thing stands on
one of the four tiles beside the player and the player does not face it (exactly one such side), a probe of that
side (left, right, up, down) from the image features and, as the ceiling, from the raw pixels of the centre crop
the policy's fovea reads (48x32 for a policy without one: the `fovea` presets' crop, where the player's tile is).
Session 31 (its own script, the set-up above): the fovea release of then 0.61 for a cow against 0.92 for a tree, raw
pixels 0.90 and 0.98: the policy hardly knows where a cow beside it is. Session 45 (the command above, but
`--episodes 120 --train 84`): the committed release's STEVE-1 policy 0.72 and 0.75, pixels 0.96 and 0.91 (253 and
1,173 held-out frames); with 40 episodes the probes are noisy (0.62 and 0.89, pixels 0.76 and 1.00).
"""
from __future__ import annotations

import argparse
import collections
import json

import numpy as np

TILES = ("tree", "stone", "water", "grass", "cow", "sand", "other")
SIDES = ("left", "right", "up", "down")
FOVEA = (48, 32)
"""the centre crop (height, width) of the 128x128 frame the `fovea` presets read at full resolution (`--adjacent`'s
pixel ceiling for a policy without a fovea)"""
ADJACENT = ("tree", "stone", "water", "cow", "sand")
"""what `--adjacent` can probe (grass is beside the player on most sides, `other` is no one thing)"""
EPISODES = (None, "collect_wood", "collect_drink", "eat_cow", None, "collect_wood", "collect_stone", None)


def episode_focuses(n: int, cycle: tuple = EPISODES) -> tuple:
    """`n` episodes' tasks: `cycle` over and over (default `EPISODES`: free play, wood, drink, cow, free, wood, stone,
    free)."""
    return tuple(cycle[k % len(cycle)] for k in range(n))


def _sibling(name: str):
    """Another script of this folder, as a module (benchmarks/ is not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def faced_tile(env) -> str:
    _, (material, obj) = env.faced
    if type(obj).__name__ == "Cow":
        return "cow"
    return material if material in TILES else "other"


def adjacent_side(env, thing: str) -> int:
    """Index into SIDES of the one tile beside the player holding `thing` (a TILES name) that it does not face; -1
    when none, when it faces one, or when two or more sides hold one (no single answer)."""
    p, world = env.player, env.world
    if faced_tile(env) == thing:
        return -1
    from steve1_ray.world.demonstrators import DIRS

    hits = []
    for k, side in enumerate(SIDES):
        dx, dy = DIRS[side]
        material, obj = world[(int(p.pos[0] + dx), int(p.pos[1] + dy))]
        name = "cow" if type(obj).__name__ == "Cow" else material
        hits += [k] if name == thing else []
    return hits[0] if len(hits) == 1 else -1


def collect(env, focuses=EPISODES, steps: int = 300, seed: int = 600, with_do: bool = False,
            adjacent: tuple[str, ...] = ()):
    """(frames (N, 128, 128, 3) uint8 as the policy sees them, labels (N,) indices into TILES, episode (N,)), and
    with `with_do` a next array (N,) bool: the demonstrator pressed `do` on that frame, and with `adjacent` things
    a last {thing: (N,) int} of `adjacent_side`."""
    from steve1_ray.agent import resize_pov
    from steve1_ray.world.demonstrators import Demonstrator

    frames, labels, episode, did = [], [], [], []
    sides = {thing: [] for thing in adjacent}
    for k, focus in enumerate(focuses):
        demo = Demonstrator(env, seed=seed + k, focus=focus)
        obs = env.reset(seed=seed + k)
        demo.reset()
        for _ in range(steps):
            frames.append(resize_pov(obs["pov"]))
            labels.append(TILES.index(faced_tile(env)))
            episode.append(k)
            for thing in adjacent:
                sides[thing].append(adjacent_side(env, thing))
            action = demo.act()
            did.append(env.crafter_name(action) == "do")  # the world's own adapter (its `move_over_attack`)
            obs, _, done, _ = env.step(action)
            if done:
                break
    out = (np.stack(frames), np.array(labels), np.array(episode)) + ((np.array(did, bool),) if with_do else ())
    return out + ({thing: np.array(v, np.int64) for thing, v in sides.items()},) if adjacent else out


def fovea_pixels(frames: np.ndarray, shape=FOVEA) -> np.ndarray:
    """The raw pixels (N, h * w * 3) float of frames' (N, 128, 128, 3) centre crop of `shape` (h, w), where a
    policy's fovea takes it (`Fovea`: top (128 - h) // 2, left (128 - w) // 2)."""
    h, w = shape
    top, left = (frames.shape[1] - h) // 2, (frames.shape[2] - w) // 2
    return frames[:, top:top + h, left:left + w].reshape(len(frames), -1).astype(np.float32) / 255.0


def side_probe(feats: np.ndarray, pixels: np.ndarray, side: np.ndarray, episode: np.ndarray, n_train: int) -> dict:
    """Which side an adjacent thing is on (`side` from `adjacent_side`, -1 rows skipped), probed from `feats` and
    from `pixels`, fitted on episodes < n_train and tested on the rest: {"frames", "test_frames", "majority" (the
    test rows' commonest side's share), "features", "pixels"} (accuracies; None without test rows)."""
    rows = side >= 0
    train = (episode < n_train)[rows]
    y = side[rows]
    test = y[~train]
    majority = np.bincount(test, minlength=len(SIDES)).max() / len(test) if len(test) else None
    out = {"frames": int(rows.sum()), "test_frames": int(len(test)),
           "majority": None if majority is None else round(float(majority), 3)}
    fit = len(test) > 0 and train.any()
    for name, x in (("features", feats), ("pixels", pixels)):
        out[name] = round(probe(x[rows], y, train, n_classes=len(SIDES))["accuracy"], 3) if fit else None
    return out


def do_by_tile(policy, frames: np.ndarray, labels: np.ndarray, episode: np.ndarray, did: np.ndarray,
               chunk: int = 16, move_over_attack: bool = False) -> dict:
    """Does the policy's `do` depend on what the player faces, as the demonstrator's does? The unconditioned policy
    (zero goal) reads each episode's frames in order with its memory (teacher-forced: the demonstrator drives), and
    its probability of `do` (summed over every button combination that plays it) is averaged per faced tile, beside
    the share of those frames on which the demonstrator pressed `do`. {tile: {"frames", "policy", "demonstrator"}}."""
    import torch

    acts, m = _sibling("guided_do").action_matrix(move_over_attack)
    p_do = np.zeros(len(frames))
    with torch.inference_mode():
        for k in np.unique(episode):
            idx = np.flatnonzero(episode == k)
            state = policy.initial_state(1)
            for j, i0 in enumerate(range(0, len(idx), chunk)):
                rows = idx[i0:i0 + chunk]
                img = torch.from_numpy(frames[rows])[None]
                first = torch.zeros(1, len(rows), dtype=torch.bool)
                first[0, 0] = j == 0
                lp, state = policy(img, None, first, state)
                p_do[rows] = (lp["buttons"][0].exp() @ m[:, acts.index("do")]).numpy()
    return {TILES[t]: {"frames": int((labels == t).sum()), "policy": round(float(p_do[labels == t].mean()), 3),
                       "demonstrator": round(float(did[labels == t].mean()), 3)}
            for t in range(len(TILES)) if (labels == t).sum() > 3}


def features(policy, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """The policy's image features (N, hidsize) of frames (N, 128, 128, 3) uint8 (under the zero goal for a
    `goal_film` policy, whose image features depend on the goal)."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(frames[i:i + batch]).float() / 255.0
            goal = x.new_zeros(len(x), policy.cfg.embed_dim) if getattr(policy.cfg, "goal_film", False) else None
            out.append(policy.net.img_process(x, goal).float().numpy())
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
    ap.add_argument("--episodes", type=int, default=8, help="demonstrator episodes (tasks cycle through EPISODES)")
    ap.add_argument("--train", type=int, default=6, help="the first this many episodes fit the probe")
    ap.add_argument("--tree-logs", type=int, default=4)
    ap.add_argument("--move-over-attack", action="store_true", help="the world's `move_over_attack` (docs/world.md)")
    ap.add_argument("--adjacent", default="", help=f"things ({', '.join(ADJACENT)}) whose side beside the player to "
                                                   "probe as well, comma-separated")
    ap.add_argument("--seed", type=int, default=600, help="world seed of the first episode (then +1 each)")
    ap.add_argument("--focuses", default="", help="the episodes' tasks in turn, comma-separated goal names or `none` "
                                                  "(free play); default EPISODES")
    args = ap.parse_args(argv)
    adjacent = tuple(t for t in args.adjacent.split(",") if t)
    unknown = sorted(set(adjacent) - set(ADJACENT))
    if unknown:
        ap.error(f"--adjacent: cannot probe {unknown}; choose among {list(ADJACENT)}")
    from steve1_ray.world.demonstrators import GOALS

    cycle = tuple(None if f == "none" else f for f in args.focuses.split(",") if f) or EPISODES
    bad = sorted({f for f in cycle if f is not None} - set(GOALS))
    if bad:
        ap.error(f"--focuses: unknown goals {bad}; use `none` or names of {sorted(GOALS)}")
    import torch

    from steve1_ray.models.loading import load_policy_spec
    from steve1_ray.world.crafter_env import CrafterEnv

    torch.set_grad_enabled(False)
    policy = load_policy_spec(args.policy, args.weights, seed=0)
    env = CrafterEnv(zombie_rate=0.2, target_outline=True, tree_logs=args.tree_logs,
                    move_over_attack=args.move_over_attack)
    frames, labels, episode, did, *sides = collect(env, focuses=episode_focuses(args.episodes, cycle),
                                                   steps=args.steps, seed=args.seed,
                                                   with_do=True, adjacent=adjacent)
    feats = features(policy, frames)
    out = probe(feats, labels, episode < args.train)
    pixels = fovea_pixels(frames, tuple(policy.cfg.fovea_shape or FOVEA)) if sides else None
    sides = {thing: side_probe(feats, pixels, side, episode, args.train)
             for thing, side in (sides[0] if sides else {}).items()}
    held = episode >= args.train
    print(json.dumps({"policy": args.policy, "seed": args.seed, "focuses": [f or "none" for f in cycle],
                      "labels": {TILES[k]: int(v) for k, v in sorted(collections.Counter(labels.tolist()).items())},
                      "accuracy": round(out["accuracy"], 3),
                      "per_tile": {TILES[c]: round(a, 2) for c, a in out["per_class"].items()},
                      "confusions": [[TILES[a], TILES[p], n] for a, p, n in out["confusions"]],
                      "n_train": out["n_train"], "n_test": out["n_test"],
                      "do_by_tile": do_by_tile(policy, frames[held], labels[held], episode[held], did[held],
                                                   move_over_attack=env.move_over_attack),
                      **({"adjacent_side": sides} if sides else {})},
                     indent=1))


if __name__ == "__main__":
    main()
