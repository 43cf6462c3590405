"""The suite's own guards: a hung test fails with its stack printed, and a process that hangs after its session
ends exits, instead of either holding CI until its 90-minute limit without a word."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _pytest(args: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # no outside addopts or timeout
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=cwd,
                          env={**clean, **env}, capture_output=True, text=True, timeout=100)
    return proc, time.monotonic() - t


@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["in-process", "xdist"])
def test_a_hung_test_fails_with_its_stack_and_the_run_goes_on(tmp_path, workers):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    # the settings this suite runs with: well under CI's 90 minutes, above its longest test (about 4 minutes)
    assert 450 <= int(ini["timeout"]) <= 1200 and 0 < int(ini["faulthandler_timeout"]) < int(ini["timeout"])

    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(120)\n\n"
                                           "def test_after():\n    pass\n")
    proc, seconds = _pytest(["--timeout=4", "-o", "faulthandler_timeout=2", *workers, "test_hang.py"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and seconds < 60, out[-2000:]
    assert "Timeout (>4.0s) from pytest-timeout" in out and "1 failed, 1 passed" in out, out[-2000:]
    assert "Timeout (0:00:02)!" in out and "test_hang.py\", line 4 in test_hangs" in out, out[-2000:]  # faulthandler


def test_a_process_that_hangs_after_its_session_exits_with_its_stack(tmp_path):
    """tests/conftest.py's pytest_sessionfinish: a thread that keeps the interpreter from exiting (as a stuck
    shutdown would) no longer holds the run; the grace (300 s) is shortened here."""
    (tmp_path / "test_linger.py").write_text(
        "import threading, time\n\ndef test_leaves_a_thread():\n"
        "    threading.Thread(target=time.sleep, args=(600,), name='lingering').start()\n")
    proc, seconds = _pytest(["-p", "conftest", "test_linger.py"], tmp_path, STEVE1_TEST_EXIT_GRACE_S="2",
                            PYTHONPATH=str(REPO / "tests"))
    out = proc.stdout + proc.stderr
    assert "1 passed" in out and proc.returncode == 1 and seconds < 60, out[-2000:]
    dump = out.split("Timeout (0:00:02)!")[-1]
    assert "Timeout (0:00:02)!" in out and "in _shutdown" in dump, out[-2000:]  # the main thread, waiting on exit
