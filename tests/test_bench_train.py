"""benchmarks/bench_train.py --vs-original at the debug preset: every variant runs, the steps start from the same
weights and batch (their first losses agree, also each in a process of its own), and the equal copy of the original
gives the noise floor."""
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_train", REPO / "benchmarks" / "bench_train.py")
bench_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_train)


def _rows(lines):
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}


@pytest.mark.parametrize("processes", [False, True])
def test_vs_original_rows_and_equal_first_losses(capsys, processes):
    which = ("fp32", "fp32-whole", "original-again") + (("fp32-glibc", "original-reuse") if processes else ())
    lines = bench_train.vs_original("debug", batch_size=1, trunc_t=4, rounds=3, embed_dim=16, which=which,
                                    processes=processes)
    rows = _rows(lines)
    assert set(rows) == {bench_train.NAMES[k] for k in ("original",) + which}
    for name, cells in rows.items():
        median_s, frames_s, first_loss, rel = float(cells[0]), float(cells[1]), float(cells[4]), float(cells[5])
        assert median_s > 0 and frames_s > 0, name
        assert abs(rel) < 1e-4, (name, first_loss, rel)  # the same weights, batch and loss for every variant
    # the rounds rotate: round 2 starts with the second variant, round 3 with the third
    printed = [line.split(": ", 1)[1].rsplit(" ", 2)[0] for line in capsys.readouterr().out.splitlines()
               if line.startswith("round ")]
    names = list(rows)
    n = len(names)
    assert printed[:n] == names
    assert printed[n:2 * n] == names[1:] + names[:1]
    assert printed[2 * n:3 * n] == names[2:] + names[:2]


def test_each_process_starts_with_its_malloc_setting_and_a_dead_one_says_so():
    # the child reports whether it started with the project's setting; VariantProcess refuses a mismatch
    for key, reuses in (("fp32", True), ("fp32-glibc", False), ("original", False), ("original-reuse", True)):
        assert bench_train.reuses_memory(key) is reuses
    with pytest.raises(RuntimeError, match="variant fp32: its process exited with 1"):
        bench_train.VariantProcess("fp32", "no-such-preset", 1, 4, 16)
