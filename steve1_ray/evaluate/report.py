"""The evaluation report folder: Markdown tables with CIs, PNG plots, sample videos, raw episodes.

`write_report(episodes, out_dir)` takes the per-episode records that `steve1_ray.evaluate.run` produces
(plain dicts, see `EPISODE_KEYS`) and writes

    report.md        first whether each prompt is followed (`prompt_following`): one plain sentence per
                     prompt (`verdict`), other phrasings of it beside it, a table; then the table per
                     (goal, guidance scale) + the baselines, a goal x target-achievement success
                     matrix, links to plots and videos
    following.json   `prompt_following`'s rows (a phrasing's with `vs_prompt`: `phrasing_vs_prompt`)
    summary.json     every metric of every cell as {mean, low, high, n}
    episodes.json    the raw records, one per episode
    plots/scale_<goal>.png      metric vs guidance scale for one goal (baseline as a dashed band)
    plots/cond_vs_uncond.png    every goal: each scale next to the unconditioned baseline
    videos/*.mp4     (written by the caller; linked here when a record names one)

The unconditioned baseline is run once; it is scored against each goal's own targets, so its row
per goal answers "how often does the agent do this anyway, without being asked". A foundation policy
(kind "foundation", the policy before goal training) is scored the same way on the same worlds; whether
a prompt is followed is still judged against the unconditioned agent of the evaluated policy.
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
FOUNDATION = "foundation"
BASELINES = (UNCOND, FOUNDATION)  # kinds played without a goal, scored against every goal's targets
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
    for goal in dict.fromkeys(c["goal"] for c in cells if c["kind"] not in BASELINES):
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
    """One entry per (goal, kind, cond_scale) cell, in first-seen order, plus one per goal for each
    baseline (kind "unconditioned" or "foundation", `goal` = the goal it is scored against, `cond_scale` None).

    Each entry: goal, kind, cond_scale, targets, paraphrase_of (the prompt a phrasing rephrases, else None), n,
    stats {metric: {mean, low, high, n}}.
    """
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for ep in episodes:
        cells[(ep["goal"], ep["kind"], ep["cond_scale"])].append(ep)
    goals: dict[str, tuple[list[str], str | None]] = {}
    for (goal, kind, _), eps in cells.items():
        if kind not in BASELINES:
            goals.setdefault(goal, (list(eps[0].get("targets") or []), eps[0].get("paraphrase_of")))
    baselines = {b: [ep for (g, kind, _), eps in cells.items() if kind == b for ep in eps] for b in BASELINES}

    def stats_of(metric_dicts: list[dict]) -> dict[str, dict]:
        keys = sorted({k for m in metric_dicts for k in m if not k.startswith("first_step/")})
        return {k: _cell_stats([m.get(k, 0.0 if k.startswith(("achievements/", "inventory_max/"))
                                    else math.nan) for m in metric_dicts], k, confidence, seed)
                for k in keys}

    out = []
    for goal, (targets, of) in goals.items():
        for b, eps in baselines.items():
            if eps:
                scored = [{**ep["metrics"], **target_metrics(ep["metrics"], targets)} for ep in eps]
                out.append({"goal": goal, "kind": b, "cond_scale": None, "targets": targets, "paraphrase_of": of,
                            "n": len(scored), "stats": stats_of(scored)})
        for (g, kind, scale), eps in cells.items():
            if g == goal and kind not in BASELINES:
                out.append({"goal": goal, "kind": kind, "cond_scale": scale, "targets": targets, "paraphrase_of": of,
                            "n": len(eps), "stats": stats_of([ep["metrics"] for ep in eps])})
    if not goals:  # a baseline-only evaluation
        for b, eps in baselines.items():
            if eps:
                out.append({"goal": b, "kind": b, "cond_scale": None, "targets": [], "paraphrase_of": None,
                            "n": len(eps), "stats": stats_of([ep["metrics"] for ep in eps])})
    return out


def prompt_following(cells: Sequence[dict], ratio: float = FOLLOW_RATIO) -> list[dict]:
    """Is each goal followed? One row per goal that has targets and guided (scale > 0) cells.

    A goal counts as followed at a guidance scale s > 0 when its mean target count there is at least
    `ratio` x the unconditioned agent's, its confidence interval's low end is above the unconditioned
    mean (one lucky episode against a baseline of zero is not enough), and it beats scale 0 (when
    scale 0 was measured). The row reports the scale with the highest count and names every scale
    at which the goal is followed; the foundation policy's count (None if not played) is reported
    beside the unconditioned agent's but plays no part in the rule. `scales` has every guided scale's
    target count {scale, mean, low, high}; `paraphrase_of` the prompt a phrasing rephrases.
    """
    rows = []
    for goal in dict.fromkeys(c["goal"] for c in cells if c["kind"] not in BASELINES):
        mine = [c for c in cells if c["goal"] == goal and "target/count" in c["stats"]]
        base = next((c["stats"]["target/count"] for c in mine if c["kind"] == UNCOND), None)
        found = next((c["stats"]["target/count"] for c in mine if c["kind"] == FOUNDATION), None)
        zero = next((c["stats"]["target/count"] for c in mine
                     if c["kind"] not in BASELINES and c["cond_scale"] == 0), None)
        guided = [c for c in mine if c["kind"] not in BASELINES and (c["cond_scale"] or 0) > 0]
        if base is None or not guided:
            continue

        def ok(st: dict) -> bool:
            return (st["mean"] >= ratio * base["mean"] and st["low"] > base["mean"]
                    and (zero is None or st["mean"] > zero["mean"]))

        best = max(guided, key=lambda c: c["stats"]["target/count"]["mean"])
        st = best["stats"]["target/count"]
        ratio_of = st["mean"] / base["mean"] if base["mean"] > 0 else (math.inf if st["mean"] > 0 else math.nan)
        rows.append({"goal": goal, "kind": best["kind"], "targets": list(best["targets"]),
                     "paraphrase_of": best.get("paraphrase_of"),
                     "unconditioned": base["mean"], "unconditioned_n": base["n"],
                     "foundation": None if found is None else found["mean"],
                     "scale_0": None if zero is None else zero["mean"],
                     "best_scale": best["cond_scale"], "best": st["mean"], "best_low": st["low"],
                     "best_high": st["high"],
                     "ratio": ratio_of,
                     "followed_at": [c["cond_scale"] for c in guided if ok(c["stats"]["target/count"])],
                     "scales": [{"scale": c["cond_scale"], **{k: c["stats"]["target/count"][k]
                                                              for k in ("mean", "low", "high")}} for c in guided]})
    for r in rows:
        r["followed"] = bool(r["followed_at"])
    return rows


def _interval(values: list[float], confidence: float, seed: int) -> dict | None:
    """{mean, low, high, n} of per-world values (a seeded bootstrap over worlds; low = high = None under 2 worlds)."""
    if not values:
        return None
    mean, lo, hi = mean_ci(values, confidence, seed=seed)
    return {"mean": mean, "low": lo if len(values) > 1 else None, "high": hi if len(values) > 1 else None,
            "n": len(values)}


def phrasing_vs_prompt(episodes: Sequence[dict], confidence: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """Each other phrasing's target count against its prompt's, world by world: does the wording change what the
    agent does, and what guidance adds?

    Pairs are the (scale, episode) cells both played in the same world (`world_seed`) and, since `plan_jobs` gives a
    phrasing its prompt's seeds, with the same prior and action noise; failed episodes (`error`) are left out. Per
    world: `scale_0` = phrasing − prompt at scale 0, `guided` = the same averaged over the guided scales (> 0) both
    played, `gain` = guided − scale_0 (the phrasing's gain from guidance minus the prompt's: what decides "a guided
    scale above scale 0"). Each is {mean, low, high, n (worlds)} from a seeded bootstrap over worlds (no interval
    under 2 worlds), or None where no world has it. Returns phrasing -> {prompt, scale_0, guided, gain, prompt_mean
    (its mean over the paired cells), same_seeds (every pair had equal, known goal and agent seeds)}; a phrasing
    whose prompt was not played has no entry.
    """
    played: dict[str, dict[tuple, tuple[float, Any, tuple]]] = defaultdict(dict)  # goal -> (scale, episode) -> ...
    prompt_of: dict[str, str] = {}
    for ep in episodes:
        if ep["kind"] in BASELINES or not ep.get("targets") or "error" in ep:
            continue
        played[ep["goal"]][(ep["cond_scale"], ep["episode"])] = (
            target_metrics(ep["metrics"], ep["targets"])["target/count"], ep.get("world_seed"),
            (ep.get("goal_seed"), ep.get("agent_seed")))
        if ep.get("paraphrase_of"):
            prompt_of[ep["goal"]] = ep["paraphrase_of"]
    out = {}
    for phrasing, prompt in prompt_of.items():
        per_world: dict[int, dict[float, tuple[float, float]]] = defaultdict(dict)
        same = True
        for (scale, k), (c, world, seeds) in played[phrasing].items():
            other = played.get(prompt, {}).get((scale, k))
            if other is None or other[1] != world:
                continue
            per_world[k][scale] = (c, other[0])
            same = same and None not in seeds and seeds == other[2]
        if not per_world:
            continue
        zero, guided, gain = [], [], []
        for _, by_scale in sorted(per_world.items()):
            d0 = by_scale[0.0][0] - by_scale[0.0][1] if 0.0 in by_scale else None
            dg = [a - b for sc, (a, b) in by_scale.items() if sc]
            if d0 is not None:
                zero.append(d0)
            if dg:
                guided.append(sum(dg) / len(dg))
                if d0 is not None:
                    gain.append(guided[-1] - d0)
        prompt_counts = [b for by_scale in per_world.values() for _, b in by_scale.values()]
        out[phrasing] = {"prompt": prompt, "scale_0": _interval(zero, confidence, seed),
                         "guided": _interval(guided, confidence, seed), "gain": _interval(gain, confidence, seed),
                         "prompt_mean": sum(prompt_counts) / len(prompt_counts), "same_seeds": same}
    return out


def with_phrasing_gaps(following: list[dict], episodes: Sequence[dict], confidence: float = 0.95,
                       seed: int = 0) -> list[dict]:
    """`prompt_following`'s rows, each phrasing's with `vs_prompt` (`phrasing_vs_prompt`'s entry) added."""
    gaps = phrasing_vs_prompt(episodes, confidence, seed)
    return [{**r, "vs_prompt": gaps[r["goal"]]} if r.get("paraphrase_of") and r["goal"] in gaps else r
            for r in following]


# achievement -> (what the agent does, what it gets) for the plain sentences of `verdict`
WHAT: dict[str, tuple[str, str]] = {
    "collect_wood": ("collects", "wood"), "collect_sapling": ("collects", "saplings"),
    "collect_drink": ("drinks", "water"), "eat_cow": ("eats", "cows"), "place_table": ("places", "tables"),
    "collect_stone": ("collects", "stone"), "collect_coal": ("collects", "coal"), "collect_iron": ("collects", "iron"),
    "collect_diamond": ("collects", "diamonds"), "place_stone": ("places", "stone"),
    "place_plant": ("plants", "saplings"), "place_furnace": ("places", "furnaces"), "eat_plant": ("eats", "plants"),
    "make_wood_pickaxe": ("makes", "wood pickaxes"), "make_stone_pickaxe": ("makes", "stone pickaxes"),
    "make_iron_pickaxe": ("makes", "iron pickaxes"), "make_wood_sword": ("makes", "wood swords"),
    "make_stone_sword": ("makes", "stone swords"), "make_iron_sword": ("makes", "iron swords"),
    "defeat_zombie": ("defeats", "zombies"), "defeat_skeleton": ("defeats", "skeletons"),
    "wake_up": ("wakes up", "times"),
}


def _num(v: float | None) -> str:
    """55.1, 2.4, 0.25, 0 (one decimal from 10 up, at most two below)."""
    if v is None or math.isnan(v):
        return "—"
    if math.isinf(v):
        return "∞"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}".rstrip("0").rstrip(".") or "0"


def _signed(v: float | None, digits: int = 2) -> str:
    """+0.04, −0.21, ±0 (a difference with its sign always written, `digits` decimals)."""
    if v is None or math.isnan(v):
        return "—"
    text = f"{v:+.{digits}f}"
    return "±0" if float(text) == 0 else text.replace("-", "−")


def _difference(d: dict | None) -> str:
    """A `phrasing_vs_prompt` entry as "−0.54 (−0.98 to −0.12)": one precision for the three numbers (one decimal
    from 10 up), no interval under 2 worlds."""
    if d is None:
        return "—"
    digits = 1 if max(abs(v) for v in (d["mean"], d["low"], d["high"]) if v is not None) >= 9.995 else 2
    if d["low"] is None:
        return f"{_signed(d['mean'], digits)} (1 world)"
    return f"{_signed(d['mean'], digits)} ({_signed(d['low'], digits)} to {_signed(d['high'], digits)})"


def _ratio_text(r: float) -> str:
    return "—" if math.isnan(r) else "∞" if math.isinf(r) else f"{r:.1f}×"


def verdict(row: dict, ratio: float = FOLLOW_RATIO, confidence: float = 0.95) -> str:
    """One plain sentence, after the goal's name, saying whether a `prompt_following` row is followed and by how much:
    "followed — at guidance scale 6 the agent collects 2.4× the wood of the unconditioned agent (55.1 vs 22.6 per
    episode, 95% interval 29.5–84.4)." or "not followed — best 0.4 cows per episode at scale 2 against 0.2
    unconditioned; the 95% interval (0–0.9) reaches down to it."."""
    verb, noun = WHAT.get(row["targets"][0], ("gets", f"`{row['targets'][0]}`")) if len(row["targets"]) == 1 \
        else ("gets", "target achievements")
    pct = f"{confidence * 100:g}%"
    base = row["unconditioned"]
    if row["followed"]:
        at = [sc for sc in row.get("scales", []) if sc["scale"] in row["followed_at"]]
        sc = max(at, key=lambda x: x["mean"]) if at else {"scale": row["best_scale"], "mean": row["best"],
                                                          "low": row["best_low"], "high": row["best_high"]}
        interval = f"{pct} interval {_num(sc['low'])}–{_num(sc['high'])}"
        if base > 0:
            return (f"followed — at guidance scale {sc['scale']:g} the agent {verb} {sc['mean'] / base:.1f}× the "
                    f"{noun} of the unconditioned agent ({_num(sc['mean'])} vs {_num(base)} per episode, {interval}).")
        return (f"followed — at guidance scale {sc['scale']:g} the agent {verb} {_num(sc['mean'])} {noun} per "
                f"episode against 0 by the unconditioned agent ({interval}).")
    best, s = row["best"], row["best_scale"]
    if best == 0:
        return f"not followed — no {noun} at any guidance scale above 0 (unconditioned: {_num(base)} per episode)."
    head = f"not followed — best {_num(best)} {noun} per episode at scale {s:g} against {_num(base)} unconditioned"
    zero = row.get("scale_0")
    if best < ratio * base:
        return f"{head}: {_ratio_text(row['ratio'])}, under the {ratio:g}× needed."
    if row["best_low"] <= base:
        return (f"{head}; the {pct} interval ({_num(row['best_low'])}–{_num(row['best_high'])}) reaches down to "
                "the unconditioned mean.")
    if zero is not None and best <= zero:
        return f"{head}; scale 0 (no guidance) already gets {_num(zero)}."
    return f"{head}."


def _grouped(rows: Sequence[dict]) -> list[tuple[dict | None, list[dict]]]:
    """(prompt row, its other phrasings' rows) in report order; phrasings of an unevaluated prompt come last,
    under None."""
    prompts = [r for r in rows if not r.get("paraphrase_of")]
    names = {r["goal"] for r in prompts}
    out: list[tuple[dict | None, list[dict]]] = [(r, [q for q in rows if q.get("paraphrase_of") == r["goal"]])
                                                 for r in prompts]
    orphans = [q for q in rows if q.get("paraphrase_of") and q["paraphrase_of"] not in names]
    if orphans:
        out.append((None, orphans))
    return out


def _following_lines(rows: Sequence[dict], ratio: float = FOLLOW_RATIO, confidence: float = 0.95) -> list[str]:
    if not rows:
        return []
    groups = _grouped(rows)
    prompts = [r for r, _ in groups if r is not None]
    others = [q for _, qs in groups for q in qs]
    counts = f"**{sum(r['followed'] for r in prompts)} of {len(prompts)}** goals followed"
    if others:
        counts += f"; their other phrasings: **{sum(q['followed'] for q in others)} of {len(others)}**"
    has_found = any(r.get("foundation") is not None for r in rows)
    lines = ["", "## Is each prompt followed?", "",
             f"{counts}. Followed at a guidance scale s > 0 = mean target count ≥ {ratio:g}× the unconditioned "
             "agent's (the same policy with no goal, on the same worlds), the interval's low end above the "
             "unconditioned mean, and more than at scale 0.", ""]
    for r, qs in groups:
        if r is not None:
            lines.append(f"- **{r['goal']}**: {verdict(r, ratio, confidence)}")
        for q in qs:
            lines.append(("  " if r is not None else "") + f"- other phrasing **“{q['goal']}”**"
                         + ("" if r is not None else f" (of `{q['paraphrase_of']}`)")
                         + f": {verdict(q, ratio, confidence)}")
    if others:
        pct = f"{confidence * 100:g}%"
        paired = all((q.get("vs_prompt") or {}).get("same_seeds") for q in others)
        lines += ["", "Each prompt beside its other phrasings (same targets, same worlds, same scales"
                  + (", and each phrasing plays with its prompt's seeds" if paired else "")
                  + "). The last three columns are the phrasing's target count minus the prompt's, world by world "
                  f"(mean and {pct} interval over the worlds): at scale 0, at the guided scales, and in what guidance "
                  "adds over scale 0 (the guided difference minus the scale-0 one; below 0: guidance helps the "
                  "phrasing less than the prompt).", "",
                  "| prompt | followed | ratio at best scale | other phrasing | followed | ratio at best scale "
                  "| phrasing − prompt: scale 0 | guided | guidance's gain |",
                  "|---|---|---|---|---|---|---|---|---|"]

        def short(r: dict) -> list[str]:
            return ["yes" if r["followed"] else "no", f"{_ratio_text(r['ratio'])} (scale {r['best_scale']:g})"]

        def gaps(q: dict) -> list[str]:
            g = q.get("vs_prompt") or {}
            return [_difference(g.get(k)) for k in ("scale_0", "guided", "gain")]

        for r, qs in groups:
            for i, q in enumerate(qs or [None]):
                left = ([f"`{r['goal']}`", *short(r)] if i == 0 else ["", "", ""]) if r is not None else ["—", "", ""]
                right = [f"`{q['goal']}`", *short(q), *gaps(q)] if q is not None else ["—"] + [""] * 5
                lines.append("| " + " | ".join(left + right) + " |")
    cols = ["goal"] + (["phrasing of"] if others else []) + ["targets", "unconditioned"] \
        + (["foundation"] if has_found else []) + ["scale 0", "best scale", "its count", "ratio", "followed at"]
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in [r for r, qs in groups for r in ([r] if r is not None else []) + qs]:
        z = "—" if r["scale_0"] is None else f"{r['scale_0']:.2f}"
        at = ", ".join(f"{s:g}" for s in r["followed_at"]) or "no"
        row = [_goal_label(r)] + ([f"`{r['paraphrase_of']}`" if r.get("paraphrase_of") else ""] if others else []) \
            + [", ".join(r["targets"]), f"{r['unconditioned']:.2f}"] \
            + ([_num(r["foundation"]) if r.get("foundation") is None else f"{r['foundation']:.2f}"] if has_found
               else []) \
            + [z, f"{r['best_scale']:g}", f"{r['best']:.2f} [{r['best_low']:.2f}, {r['best_high']:.2f}]",
               _ratio_text(r["ratio"]), at]
        lines.append("| " + " | ".join(row) + " |")
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
    if cell["kind"] in BASELINES:
        return "uncond." if cell["kind"] == UNCOND else "no goal"
    return f"{cell['cond_scale']:g}"


def _row_name(cell: dict) -> str:
    return "*no goal*" if cell["kind"] == UNCOND else "*foundation*" if cell["kind"] == FOUNDATION \
        else _goal_label(cell)


def markdown(cells: Sequence[dict], episodes: Sequence[dict], confidence: float = 0.95,
             title: str = "STEVE-1 evaluation", header_lines: Sequence[str] = (),
             following: Sequence[dict] | None = None) -> str:
    """The report.md text for `summarize`'s cells (`following`: `prompt_following(cells)`, if already made)."""
    pct = f"{confidence * 100:g}%"
    has_paper = any(k in c["stats"] for c in cells for k in PAPER)
    cols = ["goal", "targets", "scale", "n", "success rate", "target count", "first step",
            "max distance"] + (["max logs", "max dirt", "max seeds"] if has_paper else [])
    lines = [f"# {title}"] + (["", *header_lines] if header_lines else [])
    if following is None:
        following = with_phrasing_gaps(prompt_following(cells), episodes, confidence)
    lines += _following_lines(following, confidence=confidence)
    lines += ["", "## Every goal and scale", "",
              f"Means with {pct} confidence intervals: Wilson for success rates, seeded bootstrap for the "
              "rest. `success rate` = share of episodes in which any target achievement happened; "
              "`target count` = how many times; `first step` = step of the first one (episodes that got "
              "one); `max distance` = farthest distance from the start. The unconditioned baseline "
              "(*no goal*: zero goal embedding, no guidance) is one set of episodes scored against each "
              "goal's targets"
              + ("; so is the foundation policy (*foundation*: the policy before goal training, zero goal) on the "
                 "same worlds." if any(c["kind"] == FOUNDATION for c in cells) else "."), "",
              "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for c in cells:
        s = c["stats"]
        row = [_row_name(c), ", ".join(c["targets"]) or "—", _scale_label(c), str(c["n"]),
               _fmt(s.get("target/success"), rate=True), _fmt(s.get("target/count")),
               _fmt(s.get("target/first_step")), _fmt(s.get("travel/max_dist"))]
        if has_paper:
            row += [_fmt(s.get(k)) for k in PAPER]
        lines.append("| " + " | ".join(row) + " |")

    all_targets = sorted({t for c in cells for t in c["targets"]})
    if all_targets:
        lines += ["", "## Which achievements each goal produces", "",
                  "Share of episodes in which each target achievement happened (rows: goal and scale). "
                  "A prompt that is followed lights up its own column more than the others do.", "",
                  "| goal | scale | " + " | ".join(all_targets) + " |",
                  "|---|---|" + "---|" * len(all_targets)]
        rows = [(c, _cell_episodes(episodes, c)) for c in _cross_rows(cells)]  # each cell's episodes, found once
        for c, eps in rows:
            rates = [f"{_rate_of(eps, t):.2f}" for t in all_targets]
            lines.append(f"| {_row_name(c)} | {_scale_label(c)} | " + " | ".join(rates) + " |")
        lines += ["", "## How much of each target each goal produces", "",
                  "Mean count per episode of each target achievement (rows: goal and scale). A share of episodes "
                  "hides what a count shows: a prompt that sends the agent to another prompt's target (\"chop a "
                  "tree\" drinking more than \"drink water\") raises that column's count.", "",
                  "| goal | scale | " + " | ".join(all_targets) + " |",
                  "|---|---|" + "---|" * len(all_targets)]
        for c, eps in rows:
            counts = [f"{_count_of(eps, t):.2f}" for t in all_targets]
            lines.append(f"| {_row_name(c)} | {_scale_label(c)} | " + " | ".join(counts) + " |")

    lines += ["", "## Plots", ""]
    for goal, name in plot_names(cells).items():
        lines.append(f"![{goal}](plots/{name})")
    lines.append("![conditioned vs unconditioned](plots/cond_vs_uncond.png)")
    videos = [ep for ep in episodes if ep.get("video")]
    if videos:
        lines += ["", "## Sample videos", ""]
        for ep in videos:
            scale = "uncond." if ep["kind"] == UNCOND else "no goal" if ep["kind"] == FOUNDATION \
                else f"scale {ep['cond_scale']:g}"
            lines.append(f"- [`{ep['goal']}`, {scale}, episode {ep['episode']}]({ep['video']})")
    lines += ["", "Raw per-episode records: [episodes.json](episodes.json); every metric per cell: "
              "[summary.json](summary.json).", ""]
    return "\n".join(lines)


def _cross_rows(cells: Sequence[dict]) -> list[dict]:
    """The cells of the cross tables: each goal's, and each baseline once (a baseline's achievements do not
    depend on which goal scores it)."""
    rows, seen = [], set()
    for c in cells:
        if c["kind"] in BASELINES:
            if c["kind"] in seen:
                continue
            seen.add(c["kind"])
        rows.append(c)
    return rows


def _cell_episodes(episodes: Sequence[dict], cell: dict) -> list[dict]:
    return [ep for ep in episodes if ep["kind"] == cell["kind"] and ep["cond_scale"] == cell["cond_scale"]
            and (cell["kind"] in BASELINES or ep["goal"] == cell["goal"])]


def _rate_of(eps: Sequence[dict], achievement: str) -> float:
    """Share of a cell's episodes (`_cell_episodes`) in which `achievement` happened."""
    if not eps:
        return math.nan
    return sum(ep["metrics"].get(f"achievements/{achievement}", 0.0) > 0 for ep in eps) / len(eps)


def _count_of(eps: Sequence[dict], achievement: str) -> float:
    """Mean number of times `achievement` happened in a cell's episodes (`_cell_episodes`)."""
    if not eps:
        return math.nan
    return sum(float(ep["metrics"].get(f"achievements/{achievement}", 0.0)) for ep in eps) / len(eps)


def plot_scales(cells: Sequence[dict], goal: str, path: Path) -> None:
    """Target success rate, target count and travel distance against guidance scale for one goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [c for c in cells if c["goal"] == goal and c["kind"] not in BASELINES and c["cond_scale"] is not None]
    mine.sort(key=lambda c: c["cond_scale"])
    base = next((c for c in cells if c["goal"] == goal and c["kind"] == UNCOND), None)
    found = next((c for c in cells if c["goal"] == goal and c["kind"] == FOUNDATION), None)
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
        if found is not None and key in found["stats"]:
            ax.axhline(found["stats"][key]["mean"], color="tab:brown", linestyle=":", label="foundation")
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

    goals = list(dict.fromkeys(c["goal"] for c in cells if c["kind"] not in BASELINES)) or [UNCOND]
    series = sorted({c["cond_scale"] for c in cells if c["kind"] not in BASELINES and c["cond_scale"] is not None})
    labels = [b for b in BASELINES if any(c["kind"] == b for c in cells)] + [f"scale {s:g}" for s in series]
    keys = [k for k in ("target/success", "target/count", "travel/max_dist")
            if any(k in c["stats"] for c in cells)]
    fig, axes = plt.subplots(len(keys), 1, figsize=(max(6.0, 1.3 * len(goals) * max(1, len(labels)) / 2),
                                                      2.8 * len(keys)), squeeze=False)
    width = 0.8 / len(labels)
    for ax, key in zip(axes[:, 0], keys):
        for j, label in enumerate(labels):
            means, lo, hi = [], [], []
            for goal in goals:
                if label in BASELINES:
                    c = next((c for c in cells if c["kind"] == label and (c["goal"] == goal or goal == UNCOND)),
                             None)
                else:
                    c = next((c for c in cells if c["goal"] == goal and c["kind"] not in BASELINES
                              and f"scale {c['cond_scale']:g}" == label), None)
                s = c["stats"].get(key) if c else None
                m = s["mean"] if s else math.nan
                means.append(m)
                lo.append(0.0 if not s or math.isnan(s["low"]) else max(0.0, m - s["low"]))
                hi.append(0.0 if not s or math.isnan(s["high"]) else max(0.0, s["high"] - m))
            x = np.arange(len(goals)) + (j - (len(labels) - 1) / 2) * width
            ax.bar(x, means, width, yerr=[lo, hi], capsize=2, label=label,
                   color={UNCOND: "gray", FOUNDATION: "tab:brown"}.get(label))
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
    following = with_phrasing_gaps(prompt_following(cells), episodes, confidence, seed)
    (out / "following.json").write_text(json.dumps(_json_safe(following), indent=1))
    for goal, name in plot_names(cells).items():
        plot_scales(cells, goal, out / "plots" / name)
    plot_cond_vs_uncond(cells, out / "plots" / "cond_vs_uncond.png")
    report = out / "report.md"
    report.write_text(markdown(cells, episodes, confidence, title, header_lines, following))
    return report
