"""`steve1 goal-axes`: the directions of a world embedder's goal space that say which way the player faces.

    steve1 goal-axes embedder=steve1_ray/released/world/mineclip.pth out=runs/axes/facing.npy

In the embedded world the player's facing shows as its sprite and the white outline on the tile it faces, both at
the centre of the frame that the embedder looks at most closely, and the committed release's embedder encodes it
strongly (benchmarks/RESULTS.md, session 40): re-rendering the same states facing each of the four ways, 87 % of
the differences lie on three directions; those three carry 62 % of the variance of the rendered (still) clips and
34 % of the quick start's real goal windows (2.3 % for three random directions of its 128). A hindsight goal (the clip that ends a segment) therefore also says which way the
player will face there, and a text goal's facing is whatever the prior's training clips happened to show.

How: scripted demonstrators play `episodes` worlds; every `every` steps the state is rendered four times, the
player facing up, down, left and right (nothing else changes), and each frame is embedded as a still 16-frame
clip. The axes are the top `k` principal directions of the four embeddings' differences from their state's mean
(orthonormal rows, a (k, D) float32 `.npy`), with a summary `.json` beside it. `steve1 train goal_null_axes=<it>`
then keeps the policy's goal layers blind to them (`Steve1Policy.null_goal_axes`). Deterministic for a given
embedder, world and seed.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from steve1_ray.config import check
from steve1_ray.runner import Job, run_job
from steve1_ray.world.config import WorldConfig

FACINGS = ((0, -1), (0, 1), (-1, 0), (1, 0))
"""crafter facing vectors: up, down, left, right"""


@dataclass
class GoalAxesConfig:
    """Find the facing directions of a world embedder's goal space."""

    embedder: str = ""
    """the world embedder (mineclip.pth in our MineCLIP layout)"""
    out: str = ""
    """where the (k, D) axes are written (.npy; a summary .json goes beside it)"""
    data: str = ""
    """optional: a shard dataset embedded with this embedder (`steve1 dataset`); the summary then also gives the share
    of its window embeddings' variance that lies on the axes (the goals a policy trains on are moving clips)"""
    k: int = 3
    """axes kept (four facings differ in at most three directions)"""
    episodes: int = 6
    """demonstrator episodes whose states are re-rendered"""
    steps: int = 300
    """steps per episode at most"""
    every: int = 15
    """re-render every this many steps"""
    seed: int = 900
    """world seeds seed, seed+1, ... (apart from the recordings' 0.. and the release's 100000..)"""
    world: WorldConfig = field(default_factory=lambda: WorldConfig(tree_logs=4))
    """the embedded world (crafter)"""

    def __post_init__(self):
        check(bool(self.embedder and self.out), "give embedder=<mineclip.pth> out=<axes .npy>")
        check(self.out.endswith(".npy"), f"out={self.out!r} must end in .npy (the summary goes beside it as .json)")
        check(1 <= self.k <= 3, f"k={self.k!r} must be 1, 2 or 3 (four facings span at most three directions)")
        check(self.episodes >= 1 and self.steps >= 1 and self.every >= 1,
              f"episodes, steps and every must be >= 1 (got {self.episodes}, {self.steps}, {self.every})")
        check(self.world.backend == "crafter", f"world.backend={self.world.backend!r}: facing axes need crafter")


def facing_embeddings(model, world: WorldConfig, episodes: int, steps: int, every: int, seed: int) -> np.ndarray:
    """(S, 4, D): each sampled state's still-clip embedding facing up, down, left, right."""
    import cv2
    import torch

    from steve1_ray.data.contractor import MINECLIP_RESOLUTION
    from steve1_ray.data.embed import WINDOW
    from steve1_ray.world.demonstrators import Demonstrator

    env = world.make(max_steps=steps + 1)
    to_goal = getattr(model, "to_goal", None) or (lambda x: x)  # a whitened embedder's goal space
    out = []
    with torch.inference_mode():
        for ep in range(episodes):
            env.reset(seed=seed + ep)
            demo = Demonstrator(env, seed=seed + ep)
            demo.reset()
            for t in range(steps):
                _, _, done, _ = env.step(demo.act())
                if done:
                    break
                if t % every != every // 2:
                    continue
                player = env.player
                was = player.facing
                frames = []
                try:  # render_frame draws the same night noise each time: only the facing differs
                    for facing in FACINGS:
                        player.facing = facing
                        frames.append(cv2.resize(env.render_frame(), MINECLIP_RESOLUTION,
                                                 interpolation=cv2.INTER_LINEAR))
                finally:
                    player.facing = was
                feats = model.encode_frames(np.stack(frames))  # a still clip: the same frame WINDOW times
                clips = feats[:, None, :].expand(-1, WINDOW, -1)
                out.append(to_goal(model.pool_features(clips)).float().cpu().numpy())
    env.close()
    if not out:
        raise ValueError(f"no state sampled: {episodes} episodes of {steps} steps, every {every}")
    return np.stack(out)


def facing_axes(embedder: str | Path, world: WorldConfig, k: int = 3, episodes: int = 6, steps: int = 300,
                every: int = 15, seed: int = 900) -> tuple[np.ndarray, dict]:
    """((k, D) orthonormal float32 axes, summary)."""
    from steve1_ray.models.loading import load_embedder

    model = load_embedder(str(embedder), None, device="cpu")  # `released`, a file, or `debug` (random, tests)
    e = facing_embeddings(model, world, episodes, steps, every, seed).astype(np.float64)
    diff = (e - e.mean(1, keepdims=True)).reshape(-1, e.shape[-1])
    _, s, vt = np.linalg.svd(diff, full_matrices=False)
    axes = vt[:k]
    flat = e.reshape(-1, e.shape[-1])
    flat = flat - flat.mean(0)
    summary = {"embedder": str(embedder), "states": int(len(e)), "k": k,
               "difference_share": round(float((s[:k] ** 2).sum() / (s ** 2).sum()), 4),
               "clip_variance_share": round(float(((flat @ axes.T) ** 2).sum() / (flat ** 2).sum()), 4),
               "singular_values": [round(float(v), 4) for v in s[:k + 2]],
               "episodes": episodes, "steps": steps, "every": every, "seed": seed}
    return axes.astype(np.float32), summary


def data_variance_share(axes: np.ndarray, data: str) -> dict:
    """Share of the variance of a dataset's valid window embeddings (its goals) that lies on `axes`."""
    from steve1_ray.train.data import ShardEpisodes

    x = ShardEpisodes(data).window_embeddings(axes.shape[1]).astype(np.float64)
    if x.ndim != 2 or x.shape[1] != axes.shape[1] or len(x) < 2:
        raise ValueError(f"{data}: {len(x)} window embeddings of width {x.shape[1] if x.ndim == 2 else '?'}; "
                         f"need at least 2 of width {axes.shape[1]} (a dataset this embedder made)")
    x -= x.mean(0)
    return {"data": str(data), "data_windows": int(len(x)),
            "data_variance_share": round(float(((x @ axes.T.astype(np.float64)) ** 2).sum() / (x ** 2).sum()), 4)}


def _run(cfg: GoalAxesConfig) -> int:
    axes, summary = facing_axes(cfg.embedder, cfg.world, cfg.k, cfg.episodes, cfg.steps, cfg.every, cfg.seed)
    if cfg.data:
        summary.update(data_variance_share(axes, cfg.data))
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npy")
    np.save(tmp, axes)
    tmp.replace(out)  # whole or not at all
    out.with_suffix(".json").write_text(json.dumps({**summary, "out": str(out)}, indent=1) + "\n")
    print(f"goal-axes: {summary['states']} states x 4 facings; {cfg.k} axes hold {summary['difference_share']:.0%} "
          f"of the facing differences and {summary['clip_variance_share']:.0%} of the clips' variance"
          + (f", {summary['data_variance_share']:.0%} of {summary['data_windows']:,} dataset goals'"
             if cfg.data else "") + f"; wrote {out}", flush=True)
    return 0


JOB = Job("goal-axes", GoalAxesConfig, _run, summary=__doc__.strip().splitlines()[0],
          errors=(FileNotFoundError, ValueError, KeyError),
          examples="""
          steve1 goal-axes embedder=steve1_ray/released/world/mineclip.pth out=runs/axes/facing.npy""")


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, argv)


if __name__ == "__main__":
    sys.exit(main())
