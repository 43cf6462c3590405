"""The evaluation report folder: Markdown tables with CIs, PNG plots, sample videos, raw episodes.

`write_report(episodes, out_dir)` takes the per-episode records that `steve1_ray.evaluate.run` produces
(plain dicts, see `EPISODE_KEYS`) and writes

    report.md        headline table per (goal, guidance scale) + the unconditioned baseline, whether
                     each prompt is followed (`prompt_following`), a goal x target-achievement
                     success matrix, links to plots and videos
    following.json   `prompt_following`'s rows
    summary.json     every metric of every cell as {mean, low, high, n}
    episodes.json    the raw records, one per episode
    plots/scale_<goal>.png      metric vs guidance scale for one goal (baseline as a dashed band)
    plots/cond_vs_uncond.png    every goal: each scale next to the unconditioned baseline
    videos/*.mp4     (written by the caller; linked here when a record names one)

The unconditioned baseline is run once; it is scored against each goal's own targets, so its row
per goal answers "how often does the agent do this anyway, without being asked".
"""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from steve1_ray.evaluate.metrics import mean_ci, target_metrics, wilson_ci

EPISODE_KEYS = ("goal", "kind", "cond_scale", "episode", "world_seed", "goal_seed", "agent_seed", "targets", "steps",
                "died", "metrics", "video", "seconds")
UNCOND = "unconditioned"
RATE_KEYS = ("target/success",)
HEADLINE = ("target/success", "target/count", "target/first_step", "travel/max_dist")
PAPER = ("paper/max_logs", "paper/max_dirt", "paper/max_seeds")
FOLLOW_RATIO = 2.0  # a followed goal's target count vs the unconditioned agent's (`prompt_following`)


def slug(text: str, max_len: int = 40) -> str:
    """A file-name-safe short form of a goal name."""
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return (s[:max_len].rstrip("_") or "goal")


def plot_names(cells: Sequence[dict]) -> dict[str, str]:
    """goal -> its unique `scale_<slug>.png` file name (goals whose slugs collide get a number)."""
    names: dict[str, str] = {}
    for goal in dict.fromkeys(c["goal"] for c in cells if c["kind"] != UNCOND):
        base, i = f"scale_{slug(goal)}", 1
        name = f"{base}.png"
        while name in names.values():
            i += 1
            name = f"{base}_{i}.png"
        names[goal] = name
    return names


def _cell_stats(values: list[float], key: str, confidence: float, seed: int) -> dict[str, float]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if key in RATE_KEYS:
        mean, lo, hi = wilson_ci(int(sum(v > 0 for v in finite)), len(finite), confidence)
    else:
        mean, lo, hi = mean_ci(finite, confidence, seed=seed)
    return {"mean": mean, "low": lo, "high": hi, "n": len(finite)}


def summarize(episodes: Sequence[dict], confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """One entry per (goal, kind, cond_scale) cell, in first-seen order, plus one per goal for the
    baseline (kind "unconditioned", `goal` = the goal it is scored against, `cond_scale` None).

    Each entry: goal, kind, cond_scale, targets, n, stats {metric: {mean, low, high, n}}.
    """
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for ep in episodes:
        cells[(ep["goal"], ep["kind"], ep["cond_scale"])].append(ep)
    goals: dict[str, list[str]] = {}
    for (goal, kind, _), eps in cells.items():
        if kind != UNCOND:
            goals.setdefault(goal, list(eps[0].get("targets") or []))
    baseline = [ep for (g, kind, _), eps in cells.items() if kind == UNCOND for ep in eps]

    def stats_of(metric_dicts: list[dict]) -> dict[str, dict]:
        keys = sorted({k for m in metric_dicts for k in m if not k.startswith("first_step/")})
        return {k: _cell_stats([m.get(k, 0.0 if k.startswith(("achievements/", "inventory_max/"))
                                    else math.nan) for m in metric_dicts], k, confidence, seed)
                for k in keys}

    out = []
    for goal, targets in goals.items():
        if baseline:
            scored = [{**ep["metrics"], **target_metrics(ep["metrics"], targets)} for ep in baseline]
            out.append({"goal": goal, "kind": UNCOND, "cond_scale": None, "targets": targets,
                        "n": len(scored), "stats": stats_of(scored)})
        for (g, kind, scale), eps in cells.items():
            if g == goal and kind != UNCOND:
                out.append({"goal": goal, "kind": kind, "cond_scale": scale, "targets": targets,
                            "n": len(eps), "stats": stats_of([ep["metrics"] for ep in eps])})
    if baseline and not goals:  # a baseline-only evaluation
        out.append({"goal": UNCOND, "kind": UNCOND, "cond_scale": None, "targets": [],
                    "n": len(baseline), "stats": stats_of([ep["metrics"] for ep in baseline])})
    return out


def prompt_following(cells: Sequence[dict], ratio: float = FOLLOW_RATIO) -> list[dict]:
    """Is each goal followed? One row per goal that has targets and guided (scale > 0) cells.

    A goal counts as followed at a guidance scale s > 0 when its mean target count there is at least
    `ratio` x the unconditioned agent's, its confidence interval's low end is above the unconditioned
    mean (one lucky episode against a baseline of zero is not enough), and it beats scale 0 (when
    scale 0 was measured). The row reports the scale with the highest count and names every scale
    at which the goal is followed.
    """
    rows = []
    for goal in dict.fromkeys(c["goal"] for c in cells if c["kind"] != UNCOND):
        mine = [c for c in cells if c["goal"] == goal and "target/count" in c["stats"]]
        base = next((c["stats"]["target/count"] for c in mine if c["kind"] == UNCOND), None)
        zero = next((c["stats"]["target/count"] for c in mine if c["kind"] != UNCOND and c["cond_scale"] == 0), None)
        guided = [c for c in mine if c["kind"] != UNCOND and (c["cond_scale"] or 0) > 0]
        if base is None or not guided:
            continue

        def ok(st: dict) -> bool:
            return (st["mean"] >= ratio * base["mean"] and st["low"] > base["mean"]
                    and (zero is None or st["mean"] > zero["mean"]))

        best = max(guided, key=lambda c: c["stats"]["target/count"]["mean"])
        st = best["stats"]["target/count"]
        ratio_of = st["mean"] / base["mean"] if base["mean"] > 0 else (math.inf if st["mean"] > 0 else math.nan)
        rows.append({"goal": goal, "kind": best["kind"], "targets": list(best["targets"]),
                     "unconditioned": base["mean"], "scale_0": None if zero is None else zero["mean"],
                     "best_scale": best["cond_scale"], "best": st["mean"], "best_low": st["low"],
                     "best_high": st["high"],
                     "ratio": ratio_of,
                     "followed_at": [c["cond_scale"] for c in guided if ok(c["stats"]["target/count"])]})
    for r in rows:
        r["followed"] = bool(r["followed_at"])
    return rows


def _following_lines(rows: Sequence[dict], ratio: float = FOLLOW_RATIO) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Is each prompt followed?", "",
             f"**{sum(r['followed'] for r in rows)} of {len(rows)}** goals followed. Followed at a guidance scale "
             f"s > 0 = mean target count ≥ {ratio:g}× the unconditioned agent's, the interval's low end above the "
             "unconditioned mean, and more than at scale 0.", "",
             "| goal | targets | unconditioned | scale 0 | best scale | its count | ratio | followed at |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        z = "—" if r["scale_0"] is None else f"{r['scale_0']:.2f}"
        ratio_txt = "—" if math.isnan(r["ratio"]) else "∞" if math.isinf(r["ratio"]) else f"{r['ratio']:.1f}×"
        at = ", ".join(f"{s:g}" for s in r["followed_at"]) or "no"
        lines.append(f"| {_goal_label(r)} | {', '.join(r['targets'])} | {r['unconditioned']:.2f} | {z} | "
                     f"{r['best_scale']:g} | {r['best']:.2f} [{r['best_low']:.2f}, {r['best_high']:.2f}] | "
                     f"{ratio_txt} | {at} |")
    return lines


def _fmt(stat: dict | None, rate: bool = False) -> str:
    if not stat or stat["n"] == 0 or math.isnan(stat["mean"]):
        return "—"
    f = (lambda v: f"{v:.2f}") if rate or abs(stat["mean"]) < 100 else (lambda v: f"{v:.0f}")
    if stat["low"] == stat["high"]:
        return f"{f(stat['mean'])}"
    return f"{f(stat['mean'])} [{f(stat['low'])}, {f(stat['high'])}]"


def _goal_label(cell: dict) -> str:
    return f"visual: `{cell['goal']}`" if cell["kind"] == "visual" else f"`{cell['goal']}`"


def _scale_label(cell: dict) -> str:
    return "uncond." if cell["kind"] == UNCOND else f"{cell['cond_scale']:g}"


def markdown(cells: Sequence[dict], episodes: Sequence[dict], confidence: float = 0.95,
             title: str = "STEVE-1 evaluation", header_lines: Sequence[str] = (),
             following: Sequence[dict] | None = None) -> str:
    """The report.md text for `summarize`'s cells (`following`: `prompt_following(cells)`, if already made)."""
    pct = f"{confidence * 100:g}%"
    has_paper = any(k in c["stats"] for c in cells for k in PAPER)
    cols = ["goal", "targets", "scale", "n", "success rate", "target count", "first step",
            "max distance"] + (["max logs", "max dirt", "max seeds"] if has_paper else [])
    lines = [f"# {title}", "", *header_lines, "",
             f"Means with {pct} confidence intervals: Wilson for success rates, seeded bootstrap for the "
             "rest. `success rate` = share of episodes in which any target achievement happened; "
             "`target count` = how many times; `first step` = step of the first one (episodes that got "
             "one); `max distance` = farthest distance from the start. The unconditioned baseline "
             "(*no goal*: zero goal embedding, no guidance) is one set of episodes scored against each "
             "goal's targets.", "",
             "## Prompt following", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for c in cells:
        s = c["stats"]
        row = ["*no goal*" if c["kind"] == UNCOND else _goal_label(c),
               ", ".join(c["targets"]) or "—", _scale_label(c), str(c["n"]),
               _fmt(s.get("target/success"), rate=True), _fmt(s.get("target/count")),
               _fmt(s.get("target/first_step")), _fmt(s.get("travel/max_dist"))]
        if has_paper:
            row += [_fmt(s.get(k)) for k in PAPER]
        lines.append("| " + " | ".join(row) + " |")
    lines += _following_lines(prompt_following(cells) if following is None else following)

    all_targets = sorted({t for c in cells for t in c["targets"]})
    if all_targets:
        lines += ["", "## Which achievements each goal produces", "",
                  "Share of episodes in which each target achievement happened (rows: goal and scale). "
                  "A prompt that is followed lights up its own column more than the others do.", "",
                  "| goal | scale | " + " | ".join(all_targets) + " |",
                  "|---|---|" + "---|" * len(all_targets)]
        seen_uncond = False
        for c in cells:
            if c["kind"] == UNCOND:
                if seen_uncond:
                    continue  # the baseline's achievements do not depend on which goal scores it
                seen_uncond = True
            rates = [f"{_rate_of(episodes, c, t):.2f}" for t in all_targets]
            name = "*no goal*" if c["kind"] == UNCOND else _goal_label(c)
            lines.append(f"| {name} | {_scale_label(c)} | " + " | ".join(rates) + " |")

    lines += ["", "## Plots", ""]
    for goal, name in plot_names(cells).items():
        lines.append(f"![{goal}](plots/{name})")
    lines.append("![conditioned vs unconditioned](plots/cond_vs_uncond.png)")
    videos = [ep for ep in episodes if ep.get("video")]
    if videos:
        lines += ["", "## Sample videos", ""]
        for ep in videos:
            scale = "uncond." if ep["kind"] == UNCOND else f"scale {ep['cond_scale']:g}"
            lines.append(f"- [`{ep['goal']}`, {scale}, episode {ep['episode']}]({ep['video']})")
    lines += ["", "Raw per-episode records: [episodes.json](episodes.json); every metric per cell: "
              "[summary.json](summary.json).", ""]
    return "\n".join(lines)


def _rate_of(episodes: Sequence[dict], cell: dict, achievement: str) -> float:
    """Share of `cell`'s episodes in which `achievement` happened."""
    eps = [ep for ep in episodes if ep["kind"] == cell["kind"] and ep["cond_scale"] == cell["cond_scale"]
           and (cell["kind"] == UNCOND or ep["goal"] == cell["goal"])]
    if not eps:
        return math.nan
    return sum(ep["metrics"].get(f"achievements/{achievement}", 0.0) > 0 for ep in eps) / len(eps)


def plot_scales(cells: Sequence[dict], goal: str, path: Path) -> None:
    """Target success rate, target count and travel distance against guidance scale for one goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [c for c in cells if c["goal"] == goal and c["kind"] != UNCOND and c["cond_scale"] is not None]
    mine.sort(key=lambda c: c["cond_scale"])
    base = next((c for c in cells if c["goal"] == goal and c["kind"] == UNCOND), None)
    keys = [k for k in ("target/success", "target/count", "travel/max_dist")
            if any(k in c["stats"] for c in mine)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        xs = [c["cond_scale"] for c in mine if key in c["stats"]]
        st = [c["stats"][key] for c in mine if key in c["stats"]]
        means = [s["mean"] for s in st]
        err = [[max(0.0, s["mean"] - s["low"]) for s in st], [max(0.0, s["high"] - s["mean"]) for s in st]]
        ax.errorbar(xs, means, yerr=err, marker="o", capsize=3, label="conditioned")
        if base is not None and key in base["stats"]:
            b = base["stats"][key]
            ax.axhline(b["mean"], color="gray", linestyle="--", label="unconditioned")
            if not math.isnan(b["low"]):
                ax.axhspan(b["low"], b["high"], color="gray", alpha=0.15)
        ax.set_xlabel("guidance scale")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(goal if len(goal) < 70 else goal[:67] + "...", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_cond_vs_uncond(cells: Sequence[dict], path: Path) -> None:
    """Grouped bars per goal: every guidance scale next to the unconditioned baseline, with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    goals = list(dict.fromkeys(c["goal"] for c in cells if c["kind"] != UNCOND)) or [UNCOND]
    series = sorted({c["cond_scale"] for c in cells if c["kind"] != UNCOND and c["cond_scale"] is not None})
    labels = [UNCOND] + [f"scale {s:g}" for s in series]
    keys = [k for k in ("target/success", "target/count", "travel/max_dist")
            if any(k in c["stats"] for c in cells)]
    fig, axes = plt.subplots(len(keys), 1, figsize=(max(6.0, 1.3 * len(goals) * max(1, len(labels)) / 2),
                                                      2.8 * len(keys)), squeeze=False)
    width = 0.8 / len(labels)
    for ax, key in zip(axes[:, 0], keys):
        for j, label in enumerate(labels):
            means, lo, hi = [], [], []
            for goal in goals:
                if label == UNCOND:
                    c = next((c for c in cells if c["goal"] == goal and c["kind"] == UNCOND), None)
                else:
                    c = next((c for c in cells if c["goal"] == goal and c["kind"] != UNCOND
                              and f"scale {c['cond_scale']:g}" == label), None)
                s = c["stats"].get(key) if c else None
                m = s["mean"] if s else math.nan
                means.append(m)
                lo.append(0.0 if not s or math.isnan(s["low"]) else max(0.0, m - s["low"]))
                hi.append(0.0 if not s or math.isnan(s["high"]) else max(0.0, s["high"] - m))
            x = np.arange(len(goals)) + (j - (len(labels) - 1) / 2) * width
            ax.bar(x, means, width, yerr=[lo, hi], capsize=2, label=label,
                   color="gray" if label == UNCOND else None)
        ax.set_xticks(np.arange(len(goals)))
        ax.set_xticklabels([g if len(g) < 28 else g[:25] + "..." for g in goals], fontsize=8)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=min(len(labels), 6), loc="lower left", bbox_to_anchor=(0, 1.02))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_report(episodes: Sequence[dict], out_dir: str | Path, confidence: float = 0.95, seed: int = 0,
                 title: str = "STEVE-1 evaluation", header_lines: Sequence[str] = ()) -> Path:
    """Write report.md, summary.json, following.json, episodes.json and plots/ into `out_dir`; returns report.md's path.

    NaNs (e.g. `target/first_step` of an episode that never reached its target) become JSON null.
    """
    if not episodes:
        raise ValueError("write_report: no episodes to report; did every rollout fail? See the job log.")
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    cells = summarize(episodes, confidence, seed)
    (out / "episodes.json").write_text(json.dumps(_json_safe(list(episodes)), indent=1))
    (out / "summary.json").write_text(json.dumps(_json_safe(cells), indent=1))
    following = prompt_following(cells)
    (out / "following.json").write_text(json.dumps(_json_safe(following), indent=1))
    for goal, name in plot_names(cells).items():
        plot_scales(cells, goal, out / "plots" / name)
    plot_cond_vs_uncond(cells, out / "plots" / "cond_vs_uncond.png")
    report = out / "report.md"
    report.write_text(markdown(cells, episodes, confidence, title, header_lines, following))
    return report
