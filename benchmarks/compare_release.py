"""Does a re-run of `steve1 release-world` reproduce the committed release? Compare two manifests.

    python benchmarks/compare_release.py runs/relX/out/manifest.json            # against the committed release
    python benchmarks/compare_release.py A/manifest.json B/manifest.json [--rtol 1e-3]

Prints, for every file, whether its sha256 is the same, and for every training metric of the manifest (every leaf of
`metrics`: the recordings' counts, each embedder epoch, the text tower's, the policies' validation losses, the
prior's history) whether it is equal, or how far apart. Timings (`seconds`, `cpu_seconds`) and absolute paths (the
work folders) are not compared. Exit 0 when every file is identical, or when both manifests have the same metrics
and each is within `--rtol` (default 0: equal); else 1.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

COMMITTED = Path(__file__).resolve().parent.parent / "steve1_ray" / "released" / "world" / "manifest.json"
TIMINGS = {"seconds", "cpu_seconds"}


def leaves(x, path: str = "") -> dict[str, object]:
    """Every scalar of a JSON tree by its dotted path (list items by index), timings and absolute paths left out."""
    if isinstance(x, dict):
        return {k: v for key, value in x.items() if key not in TIMINGS
                for k, v in leaves(value, f"{path}.{key}" if path else key).items()}
    if isinstance(x, list):
        return {k: v for i, value in enumerate(x) for k, v in leaves(value, f"{path}[{i}]").items()}
    if isinstance(x, str) and x.startswith("/"):
        return {}
    return {path: x}


def close(a, b, rtol: float) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rtol * max(abs(a), abs(b)))
    return a == b


def compare(a: dict, b: dict, rtol: float = 0.0) -> dict:
    """{"files": {name: same?}, "metrics": n compared, "differ": [(path, a, b)], "missing": [paths in one only]}."""
    names = sorted(set(a["files"]) | set(b["files"]))
    files = {n: a["files"].get(n, {}).get("sha256") == b["files"].get(n, {}).get("sha256") is not None
             for n in names}
    la, lb = leaves(a.get("metrics", {})), leaves(b.get("metrics", {}))
    common = [k for k in la if k in lb]
    differ = [(k, la[k], lb[k]) for k in common if not close(la[k], lb[k], rtol)]
    missing = sorted(set(la) ^ set(lb))
    return {"files": files, "metrics": len(common), "differ": differ, "missing": missing}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rerun", type=Path, help="the re-run's manifest.json")
    p.add_argument("reference", type=Path, nargs="?", default=COMMITTED, help="default: the committed release's")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for the metrics (default: equal)")
    args = p.parse_args(argv)
    a, b = (json.loads(f.read_text()) for f in (args.rerun, args.reference))
    r = compare(a, b, args.rtol)
    for name, same in r["files"].items():
        print(f"{name:20s} {'identical' if same else 'DIFFERENT'}")
    print(f"metrics: {r['metrics'] - len(r['differ'])} of {r['metrics']} "
          f"{'equal' if args.rtol == 0 else f'within rtol {args.rtol:g}'}")
    for path, x, y in r["differ"][:40]:
        print(f"  {path}: {x} vs {y}")
    if len(r["differ"]) > 40:
        print(f"  ... and {len(r['differ']) - 40} more")
    if r["missing"]:
        print(f"in one manifest only: {len(r['missing'])}, e.g. {', '.join(r['missing'][:5])}")
    reproduced = not r["differ"] and not r["missing"] and r["metrics"] > 0
    return 0 if all(r["files"].values()) or reproduced else 1


if __name__ == "__main__":
    sys.exit(main())
