"""Side by side: each prompt's target count per guidance scale, over several evaluations, and the report's rule.

For every evaluation folder (`steve1 evaluate` output: its `summary.json`) one line per goal (prompts and their other
phrasings): the unconditioned agent's and the foundation policy's target count, each scale's, and whether the goal
is followed by the report's own rule (`steve1_ray.evaluate.report.prompt_following`), then how many captions and
phrasings were followed. `--scales 1 2` re-applies the rule as if only those guided scales (and scale 0) had been
played, which is how a sweep over more scales answers "what would the default evaluation have said"; cells are
independent (each has its own seeds, docs/evaluation.md), so dropping some does not change the others.

    python benchmarks/following_table.py runs/quickstart/eval runs/qs/eval_seed1 --scales 1 2
    python benchmarks/following_table.py runs/quickstart/eval --json     # the rows as JSON

Session 39 (benchmarks/RESULTS.md) chose the default scales 0, 1, 2 with it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from steve1_ray.evaluate.report import _json_safe, _ratio_text, prompt_following


def load_cells(folder: str | Path, scales: list[float] | None = None) -> list[dict]:
    """The evaluation's cells (`summary.json`); with `scales`, only those guided scales (and scale 0, baselines).
    A scale that the evaluation did not play is refused by name (it would silently answer for fewer scales)."""
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise SystemExit(f"following_table: {path} not found (pass a `steve1 evaluate` out_dir)")
    cells = json.loads(path.read_text())
    if scales is None:
        return cells
    keep = {float(s) for s in scales}
    played = {float(c["cond_scale"]) for c in cells if c["cond_scale"]}
    if keep - played:
        raise SystemExit(f"following_table: {folder} played no guided scale "
                         f"{', '.join(f'{s:g}' for s in sorted(keep - played))} (it played "
                         f"{', '.join(f'{s:g}' for s in sorted(played)) or 'none'})")
    # baselines have no scale, scale 0 is the plain conditional policy the rule compares with: both always stay
    return [c for c in cells if not c["cond_scale"] or float(c["cond_scale"]) in keep]


def rows(cells: list[dict]) -> list[dict]:
    """`prompt_following`'s rows, each with `counts`: {"unconditioned", "foundation", "s<scale>": mean}."""
    out = prompt_following(cells)
    for r in out:
        r["counts"] = {"unconditioned": r["unconditioned"], "foundation": r["foundation"], "s0": r["scale_0"],
                       **{f"s{s['scale']:g}": s["mean"] for s in r["scales"]}}
    return out


def _num(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def render(folder: str, table: list[dict]) -> list[str]:
    keys = list(dict.fromkeys(k for r in table for k in r["counts"]))
    lines = [f"## {folder}", "", "| goal | " + " | ".join(keys) + " | ratio | followed at |",
             "|---|" + "---|" * (len(keys) + 2)]
    for r in table:
        name = r["goal"] + (f" (≈ {r['paraphrase_of']})" if r.get("paraphrase_of") else "")
        at = ", ".join(f"{s:g}" for s in r["followed_at"]) or "no"
        lines.append(f"| {name} | " + " | ".join(_num(r["counts"].get(k)) for k in keys)
                     + f" | {_ratio_text(r['ratio'])} | {at} |")
    caps = [r for r in table if not r.get("paraphrase_of")]
    phr = [r for r in table if r.get("paraphrase_of")]
    lines += ["", f"captions followed: **{sum(r['followed'] for r in caps)} of {len(caps)}**"
              + (f"; phrasings: **{sum(r['followed'] for r in phr)} of {len(phr)}**" if phr else ""), ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", help="`steve1 evaluate` out_dir folders")
    ap.add_argument("--scales", type=float, nargs="+", help="only these guided scales (scale 0 always)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    tables = {f: rows(load_cells(f, args.scales)) for f in args.folders}
    if args.json:
        print(json.dumps(_json_safe(tables), indent=1, default=str))
    else:
        print("\n".join(line for f, t in tables.items() for line in render(f, t)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
