"""Samplings: named train/val splits of shard datasets by frame budget, and weighted mixtures.

Like STEVE-1's `generate_sampling.py --type neurips`: keep episodes long enough to train on, shuffle
them with a seeded RNG, add episodes to train until it holds >= train_frames, then the following ones
to val until it holds >= val_frames (the split is by episode). train_frames=-1 means "everything not
in val"; `val_from` reuses the val list of an earlier sampling.

A mixture takes several datasets with weights (e.g. 80% contractor + 20% a new task, the STEVE-1
advice against forgetting): dataset i supplies weight_i / sum(weights) of each split's frame budget
(whole episodes, so the fractions hold up to one episode per dataset). With train_frames=-1 the train
budget is the largest that every dataset can supply at its weight.

Files written to `output_dir`:
    <name>_train.txt, <name>_val.txt   one episode per line: `<episode_id>` when the sampling has one
                                       dataset, `<dataset root>\t<episode_id>` for mixtures
    <name>_sampling.json               datasets, weights, seed, budgets and frames per split/dataset

    steve1 sampling name=neurips datasets=[/data/ds] val_frames=10000 train_frames=30000
    python jobs/create_sampling.py name=mix 'datasets=[/data/contractor:0.8, /data/task:0.2]' val_frames=2000
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from steve1_ray.config import absolute_local, check
from steve1_ray.data.shards import Store, list_episodes
from steve1_ray.runner import Job, run_job

DEFAULT_MIN_FRAMES = 655  # max(min_btwn_goals + 15, T + 15) with T = 640, min_btwn_goals = 15


def _parse_dataset(spec: str) -> tuple[str, float]:
    """`root` or `root:weight` (a URI's own colon is kept: the weight is after the last ':' if numeric)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and not tail.startswith("//"):
        try:
            return head, float(tail)
        except ValueError:
            pass
    return spec, 1.0


def _take(ids: list[str], lengths: dict[str, int], budget: float) -> list[str]:
    """Leading episodes of `ids` until their frames reach `budget` (all of them if budget < 0)."""
    if budget < 0:
        return list(ids)
    out, total = [], 0
    for eid in ids:
        if total >= budget:
            break
        out.append(eid)
        total += lengths[eid]
    return out


def create_sampling(datasets: list[str] | list[tuple[str, float]], name: str, output_dir: str | Path,
                    val_frames: int, train_frames: int = -1, seed: int = 42,
                    min_frames: int = DEFAULT_MIN_FRAMES, val_from: str | None = None) -> dict:
    """Write `<name>_{train,val}.txt` and `<name>_sampling.json`; returns the json's content.

    datasets: roots (weight 1) or (root, weight) pairs / "root:weight" strings.
    """
    pairs = [_parse_dataset(d) if isinstance(d, str) else (str(d[0]), float(d[1])) for d in datasets]
    # local roots absolute: training reads them in Ray Train workers, which start in another folder
    pairs = [(absolute_local(root), w) for root, w in pairs]
    if not pairs:
        raise ValueError("no datasets: pass at least one dataset root")
    if any(w <= 0 for _, w in pairs):
        raise ValueError(f"weights must be > 0, got {[w for _, w in pairs]}")
    total_w = sum(w for _, w in pairs)
    output_dir = Path(output_dir)
    reuse_val: set[tuple[str, str]] | None = None
    if val_from is not None:
        reuse_val = {(absolute_local(root), eid) for root, eid in read_sampling(output_dir, val_from, "val")}

    per_dataset = []
    for root, w in pairs:
        frac = w / total_w
        episodes = list_episodes(Store(root))
        if not episodes:
            raise ValueError(f"dataset {root} has no finished episodes (no index/*.json): is it a dataset root "
                             "written by jobs/generate_dataset.py?")
        lengths = {eid: e["n_frames"] for eid, e in episodes.items() if e["n_frames"] >= min_frames}
        if not lengths:
            raise ValueError(f"dataset {root}: no episode has >= {min_frames} frames "
                             f"({len(episodes)} episodes in total); lower min_frames or add data")
        ids = sorted(lengths)
        random.Random(seed).shuffle(ids)
        if reuse_val is not None:
            val = [eid for eid in ids if (root, eid) in reuse_val or ("", eid) in reuse_val]
            rest = [eid for eid in ids if eid not in set(val)]
            train = _take(rest, lengths, -1 if train_frames < 0 else train_frames * frac)
        elif train_frames < 0:
            val = _take(ids, lengths, val_frames * frac)
            train = ids[len(val):]  # a mixture trims these to the weights below
        else:
            train = _take(ids, lengths, train_frames * frac)
            val = _take(ids[len(train):], lengths, val_frames * frac)
        n_train, n_val = sum(lengths[e] for e in train), sum(lengths[e] for e in val)
        if train_frames >= 0 and n_train < train_frames * frac:
            raise ValueError(f"dataset {root}: needs {train_frames * frac:.0f} train frames (weight {w}) but has "
                             f"only {n_train} left; lower train_frames or use train_frames=-1")
        if reuse_val is None and n_val < val_frames * frac:
            raise ValueError(f"dataset {root}: needs {val_frames * frac:.0f} val frames (weight {w}) but only "
                             f"{n_val} remain after train; lower val_frames/train_frames")
        per_dataset.append({"root": root, "weight": w, "train": train, "val": val,
                            "train_frames": n_train, "val_frames": n_val})

    mixture = len(pairs) > 1
    if mixture and train_frames < 0 and reuse_val is None:
        # the largest train budget every dataset can supply at its weight
        budget = min(d["train_frames"] / (d["weight"] / total_w) for d in per_dataset)
        for d in per_dataset:
            lengths = {eid: e["n_frames"] for eid, e in list_episodes(Store(d["root"])).items()}
            d["train"] = _take(d["train"], lengths, budget * d["weight"] / total_w)
            d["train_frames"] = sum(lengths[e] for e in d["train"])
    output_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        lines = [f"{d['root']}\t{eid}" if mixture else eid for d in per_dataset for eid in d[split]]
        (output_dir / f"{name}_{split}.txt").write_text("".join(line + "\n" for line in lines))
    info = {"name": name, "seed": seed, "min_frames": min_frames, "val_frames_budget": val_frames,
            "train_frames_budget": train_frames, "val_from": val_from, "mixture": mixture,
            "datasets": [{k: d[k] for k in ("root", "weight", "train_frames", "val_frames")}
                         | {"train_episodes": len(d["train"]), "val_episodes": len(d["val"])}
                         for d in per_dataset],
            "train_frames": sum(d["train_frames"] for d in per_dataset),
            "val_frames": sum(d["val_frames"] for d in per_dataset)}
    (output_dir / f"{name}_sampling.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def read_sampling(output_dir: str | Path, name: str, split: str) -> list[tuple[str, str]]:
    """[(dataset root, episode_id)] of a split; the root comes from the json for one-dataset samplings."""
    output_dir = Path(output_dir)
    path = output_dir / f"{name}_{split}.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: create it with `steve1 sampling name={name} ...`")
    info_path = output_dir / f"{name}_sampling.json"
    default_root = ""
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if len(info["datasets"]) == 1:
            default_root = info["datasets"][0]["root"]
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        root, sep, eid = line.rpartition("\t")
        out.append((root if sep else default_root, eid))
    return out


@dataclass
class SamplingConfig:
    """One sampling: which datasets, how many frames per split, where the split files go."""

    name: str = ""
    """sampling name (the files' prefix), e.g. neurips; training reads it as `sampling=<name>`"""
    datasets: list[str] = field(default_factory=list)
    """dataset roots, each optionally with a weight: [/data/ds] or [/data/contractor:0.8, /data/task:0.2]"""
    output_dir: str = "samplings"
    """folder for the sampling files (training's `sampling_dir`)"""
    val_frames: int = 0
    """frames in the validation split (whole episodes, at least this many); unused with `val_from`"""
    train_frames: int = -1
    """frames in the training split; negative (-1): everything not in val"""
    seed: int = 42
    """shuffles the episodes before they are taken"""
    min_frames: int = DEFAULT_MIN_FRAMES
    """episodes shorter than this are left out (655 = T 640 + 15)"""
    val_from: Optional[str] = None
    """reuse the val split of this earlier sampling name (in the same output_dir)"""

    def __post_init__(self):
        check(bool(self.name) and "/" not in self.name and not self.name.startswith("."),
              f"name={self.name!r}: give the sampling a name (a file prefix without '/'), e.g. name=neurips")
        check(bool(self.datasets), "datasets is empty: give at least one dataset root, e.g. datasets=[data/shards]")
        check(self.val_frames >= 1 or self.val_from is not None,
              f"val_frames={self.val_frames}: give the validation budget in frames (>= 1), or val_from=<sampling>")
        check(self.min_frames >= 1, f"min_frames={self.min_frames} must be >= 1")


def _run(cfg: SamplingConfig) -> int:
    info = create_sampling(cfg.datasets, cfg.name, cfg.output_dir, cfg.val_frames, cfg.train_frames, cfg.seed,
                           cfg.min_frames, cfg.val_from)
    print(json.dumps({k: info[k] for k in ("name", "train_frames", "val_frames", "datasets")}, indent=1))
    return 0


JOB = Job("sampling", SamplingConfig, _run, errors=(ValueError, FileNotFoundError),
          save_as=lambda cfg: Path(cfg.output_dir) / f"{cfg.name}_config.yaml",
          examples="""
          steve1 sampling name=neurips datasets=[/data/ds] val_frames=10000 train_frames=30000
          steve1 sampling name=mix 'datasets=[/data/contractor:0.8, /data/task:0.2]' val_frames=2000""")


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, argv)
