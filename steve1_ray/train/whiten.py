"""`steve1 whiten-embedder`: give a world embedder a whitened goal space, fitted on a dataset it embedded.

    steve1 whiten-embedder embedder=<world>/embedder/mineclip.pth data=<shards embedded with it> \
        out=<world>/embedder_white/mineclip.pth [rel_eps=1e-3]

Reads every valid window embedding of the dataset (`embeds` where `embed_valid`), fits a ZCA whitening
(`steve1_ray.models.mineclip.fit_goal_whitening`) and writes the embedder again with `goal_whiten` on and the
fit in its `goal_mean` / `goal_matrix` buffers. Its goals (`encode_video`, the dataset job's embeddings) are
then whitened; its text tower and its training path are the same weights. Re-embed the data with the new file
(`steve1 dataset mineclip_path=...`) before training a policy or a prior on it. Why: docs/embedders.md,
"A whitened goal space".
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steve1_ray.config import check
from steve1_ray.runner import Job, run_job


@dataclass
class WhitenConfig:
    """Fit a whitened goal space for a world embedder on a dataset it embedded."""

    embedder: str = ""
    """the embedder (mineclip.pth, ours: not whitened yet)"""
    data: str = ""
    """a shard dataset (`steve1 dataset`) embedded with that embedder"""
    out: str = ""
    """where the whitened embedder is written (a summary goes beside it as .json)"""
    rel_eps: float = 1e-3
    """eigenvalues below this share of the largest are floored there (directions the data hardly uses stay weak)"""

    def __post_init__(self):
        check(bool(self.embedder and self.data and self.out), "give embedder=<mineclip.pth> data=<shards> "
                                                              "out=<new mineclip.pth>")
        check(0 < self.rel_eps < 1, f"rel_eps={self.rel_eps!r} must be in (0, 1)")


def whiten_embedder(embedder: str | Path, data: str, out: str | Path, rel_eps: float = 1e-3) -> dict:
    """Fit and write; returns a summary (frames used, variance share of the top direction before and after)."""
    import dataclasses

    from steve1_ray.models.mineclip import MineCLIP, fit_goal_whitening, load_mineclip, save_mineclip
    from steve1_ray.train.data import ShardEpisodes

    model = load_mineclip(embedder)
    if model.cfg.goal_whiten:
        raise ValueError(f"{embedder} is whitened already; fit on a dataset embedded with the embedder it was "
                         "made from")
    x = ShardEpisodes(data).window_embeddings(model.embed_dim)
    if x.shape[1] != model.embed_dim:
        raise ValueError(f"{data} holds {x.shape[1]}-d embeddings, {embedder} makes {model.embed_dim}-d ones: "
                         "not a dataset this embedder made")
    if len(x) <= model.embed_dim:
        raise ValueError(f"{data}: {len(x)} window embeddings, need more than embed_dim={model.embed_dim} to fit "
                         "a whitening")
    mean, matrix = fit_goal_whitening(x, rel_eps)
    white = MineCLIP(dataclasses.replace(model.cfg, goal_whiten=True))
    state = {**model.state_dict(), "goal_mean": white.goal_mean, "goal_matrix": white.goal_matrix}
    white.load_state_dict(state, strict=True)
    white.set_goal_whitening(mean, matrix)
    out = save_mineclip(white, out)

    def top_share(v: np.ndarray) -> float:
        w = np.linalg.eigvalsh(np.cov((v - v.mean(0)).T))
        return round(float(w[-1] / w.sum()), 3)

    y = (x - mean) @ matrix.T
    summary = {"embedder": str(embedder), "data": str(data), "out": str(out), "frames": int(len(x)),
               "rel_eps": rel_eps, "top_direction_share": {"before": top_share(x), "after": top_share(y)}}
    Path(out).with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _run(cfg: WhitenConfig) -> int:
    summary = whiten_embedder(cfg.embedder, cfg.data, cfg.out, cfg.rel_eps)
    print(f"whiten-embedder: {summary['frames']:,} window embeddings; the top direction held "
          f"{summary['top_direction_share']['before']:.0%} of the variance, now "
          f"{summary['top_direction_share']['after']:.0%}; wrote {summary['out']}", flush=True)
    return 0


JOB = Job("whiten-embedder", WhitenConfig, _run, summary=__doc__.strip().splitlines()[0],
          errors=(FileNotFoundError, ValueError, KeyError),
          examples="""
          steve1 whiten-embedder embedder=runs/w/embedder/mineclip.pth data=runs/w/shards out=runs/w/white/mineclip.pth""")


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, argv)


if __name__ == "__main__":
    sys.exit(main())
