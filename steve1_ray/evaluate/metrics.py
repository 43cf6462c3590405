"""Prompt-following metrics: what one episode achieved, from its per-step `info` records, plus CIs.

One episode's metrics come from a `MetricTracker` fed every step's `info` (or `episode_metrics(infos)`
over a recorded list). The keys, all floats:

    achievements/<name>     times <name> was achieved by the end (crafter counts are cumulative)
    inventory_max/<item>    the largest count of <item> held at any step
    travel/max_dist         the largest distance from the start position, like STEVE-1's `travel_dist`
                            (x-z plane in Minecraft, grid cells in crafter)
    travel/path_len         the summed step-to-step displacement
    target/success          1.0 if any of the prompt's target achievements happened, else 0.0
    target/count            the summed counts of the target achievements
    target/first_step       the step (1-based) of the first target achievement, NaN if none
    first_step/<name>       the step (1-based) at which <name> first happened (only for those that did)
    paper/max_logs|max_dirt|max_seeds   STEVE-1's programmatic metrics (MineRL inventories): the largest
                            summed count of items whose name contains `_log`, `dirt`, `seed`

The `target/*` keys exist only when the prompt has target achievements (`target_metrics` derives them
from the others, so a baseline episode can be scored against any prompt's targets); `paper/*` only with
`paper_metrics=True` (MineRL backends, whose inventories use Minecraft item names).

Statistics over episodes: `mean_ci` (seeded percentile bootstrap) for counts and distances,
`wilson_ci` for success rates.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

PAPER_ITEMS = {"paper/max_logs": "_log", "paper/max_dirt": "dirt", "paper/max_seeds": "seed"}


def player_position(info: Mapping[str, Any]) -> np.ndarray | None:
    """The player's horizontal position as a float (2,) array, or None if `info` has none.

    Understands crafter's `player_pos` (grid x, y), MineRL's `location_stats` (`xpos`, `zpos`) and a
    plain `pos` / `position` of 2 or 3 numbers (x, [y,] z; the height is dropped).
    """
    if "player_pos" in info and info["player_pos"] is not None:
        return np.asarray(info["player_pos"], dtype=np.float64)[:2]
    loc = info.get("location_stats")
    if isinstance(loc, Mapping) and "xpos" in loc and "zpos" in loc:
        return np.array([float(np.asarray(loc["xpos"])), float(np.asarray(loc["zpos"]))])
    for key in ("pos", "position"):
        if key in info and info[key] is not None:
            p = np.asarray(info[key], dtype=np.float64).reshape(-1)
            return p[[0, 2]] if p.size == 3 else p[:2]
    return None


def _counts(d: Mapping[str, Any] | None) -> dict[str, float]:
    return {str(k): float(np.asarray(v).sum()) for k, v in (d or {}).items()}


class MetricTracker:
    """Streams one episode's `info` dicts into the metrics named in the module docstring."""

    def __init__(self, targets: Sequence[str] = (), paper_metrics: bool = False):
        self.targets = list(targets)
        self.paper_metrics = paper_metrics
        self.steps = 0
        self.achievements: dict[str, float] = {}
        self.inventory_max: dict[str, float] = {}
        self.paper: dict[str, float] = {k: 0.0 for k in PAPER_ITEMS} if paper_metrics else {}
        self.start: np.ndarray | None = None
        self.last: np.ndarray | None = None
        self.max_dist = 0.0
        self.path_len = 0.0
        self.first_step: dict[str, int] = {}

    def update(self, info: Mapping[str, Any]) -> None:
        """Add one step's `info` (call it after every `env.step`, in order)."""
        self.steps += 1
        for name, count in _counts(info.get("achievements")).items():
            # Counts only grow; the max keeps a backend that resets them on death from losing any.
            self.achievements[name] = max(self.achievements.get(name, 0.0), count)
            if count > 0 and name not in self.first_step:
                self.first_step[name] = self.steps
        inventory = _counts(info.get("inventory"))
        for item, count in inventory.items():
            self.inventory_max[item] = max(self.inventory_max.get(item, 0.0), count)
        if self.paper_metrics:
            for key, pattern in PAPER_ITEMS.items():
                held = sum(c for item, c in inventory.items() if pattern in item)
                self.paper[key] = max(self.paper[key], held)
        pos = player_position(info)
        if pos is not None:
            if self.start is None:
                self.start = self.last = pos
            self.max_dist = max(self.max_dist, float(np.linalg.norm(pos - self.start)))
            self.path_len += float(np.linalg.norm(pos - self.last))
            self.last = pos

    def result(self) -> dict[str, float]:
        """The metrics so far (a fresh dict of floats; see the module docstring)."""
        out: dict[str, float] = {}
        for name in sorted(set(self.achievements) | set(self.targets)):
            out[f"achievements/{name}"] = self.achievements.get(name, 0.0)
        for item in sorted(self.inventory_max):
            out[f"inventory_max/{item}"] = self.inventory_max[item]
        for name in sorted(self.first_step):
            out[f"first_step/{name}"] = float(self.first_step[name])
        out["travel/max_dist"] = self.max_dist
        out["travel/path_len"] = self.path_len
        out.update(self.paper)
        out.update(target_metrics(out, self.targets))
        return out


def target_metrics(metrics: Mapping[str, float], targets: Sequence[str]) -> dict[str, float]:
    """`target/success`, `target/count`, `target/first_step` of an episode's metrics for `targets`
    (an empty dict when there are no targets)."""
    if not targets:
        return {}
    count = sum(metrics.get(f"achievements/{t}", 0.0) for t in targets)
    steps = [metrics[f"first_step/{t}"] for t in targets if f"first_step/{t}" in metrics]
    return {"target/success": float(count > 0), "target/count": float(count),
            "target/first_step": float(min(steps)) if steps else math.nan}


def episode_metrics(infos: Iterable[Mapping[str, Any]], targets: Sequence[str] = (),
                    paper_metrics: bool = False) -> dict[str, float]:
    """Metrics of one recorded episode: `infos` are its per-step `info` dicts in order."""
    tracker = MetricTracker(targets, paper_metrics)
    for info in infos:
        tracker.update(info)
    return tracker.result()


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """(rate, low, high): the Wilson score interval of `successes` out of `n` (NaNs when n = 0)."""
    if n == 0:
        return math.nan, math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes!r}")
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, not 1e-17 rounding
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return p, lo, hi


def mean_ci(values: Sequence[float], confidence: float = 0.95, n_boot: int = 2000,
            seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): a seeded percentile-bootstrap interval of the mean; NaN values are skipped.

    With one value the interval is that value; with none, all NaN. Percentile bootstrap runs a little
    narrow for a handful of episodes: read CIs from fewer than ~10 episodes as rough.
    """
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1 or np.all(x == x[0]):
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    boot = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return mean, float(lo), float(hi)
