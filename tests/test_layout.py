"""The layout keeps its promises (docs/DESIGN.md): no import circles, model code without Ray, one place that starts
Ray, one mp4 writer, one loader of checkpoint folders, and a design document that names only files that exist."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "steve1_ray"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(REPO).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _imports(name: str, path: Path, known: dict) -> set[str]:
    """Every steve1_ray module `name` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            mod = ".".join(base[:len(base) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def test_no_import_circles():
    mods = _modules()
    graph = {m: _imports(m, f, mods) for m, f in mods.items()}
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def _source_lines(pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [f"{f.relative_to(REPO)}:{i}" for f in sorted(PKG.rglob("*.py"))
            for i, line in enumerate(f.read_text().splitlines(), 1) if rx.search(line) and not line.lstrip().startswith("#")]


def _constants(*values) -> list[str]:
    """Files in which a literal (not a docstring or comment) equal to one of `values` appears, once per use."""
    return [str(f.relative_to(REPO)) for f in sorted(PKG.rglob("*.py")) for node in ast.walk(ast.parse(f.read_text()))
            if isinstance(node, ast.Constant) and type(node.value) in (str, int, float) and node.value in values]


def test_model_code_never_imports_ray():
    mods = _modules()
    for name, path in mods.items():
        if name.startswith("steve1_ray.models"):
            text = path.read_text()
            assert not re.search(r"^\s*(import ray|from ray)", text, re.M), f"{path} imports Ray"


def test_one_place_for_each_idea():
    assert _source_lines(r"\bray\.init\(") == [l for l in _source_lines(r"\bray\.init\(") if l.startswith("steve1_ray/cluster.py")]
    assert all(l.startswith("steve1_ray/world/video.py") for l in _source_lines(r"av\.open\(.*mode=\"w\""))
    assert _constants("policy.model", "steve1.weights") == ["steve1_ray/models/loading.py"] * 2  # checkpoint layout
    assert _constants(2400, 2400.0) == ["steve1_ray/actions.py"]  # mouse counts per 360 degrees
    assert [line.split(":")[0] for line in _source_lines(r"argparse\.ArgumentParser\(")] == ["steve1_ray/runner.py"]


def test_design_doc_names_only_files_that_exist():
    text = (REPO / "docs" / "DESIGN.md").read_text()
    named = set(re.findall(r"`((?:steve1_ray|configs|jobs|serve|deploy|benchmarks|tests|docs)/[\w./-]+)`", text))
    blocks = text.split("```")[1::2]
    layout = next((b for b in blocks if b.lstrip().startswith("steve1_ray/")), "")  # the layout tree
    folder = None
    for line in layout.splitlines():  # the layout block: "  data/" then "    pipeline.py  ..." lines under it
        m = re.match(r"^  (\w+)/", line)
        if m:
            folder = m.group(1)
        for f in re.findall(r"\b([a-z_]+\.py)\b", line):
            if line.startswith("    ") and folder:
                named.add(f"steve1_ray/{folder}/{f}")
            elif re.match(r"^  [a-z_]+\.py", line):
                named.add(f"steve1_ray/{f}")
    missing = sorted(p for p in named if not (REPO / p.rstrip("/")).exists())
    assert named and not missing, f"docs/DESIGN.md names files that do not exist: {missing}"
    modules = {str(p.relative_to(REPO)) for p in PKG.rglob("*.py") if p.name != "__init__.py"}
    assert not modules - named, f"modules missing from the layout in docs/DESIGN.md: {sorted(modules - named)}"
