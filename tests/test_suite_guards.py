"""The suite's own guard: a hung test fails with its stack printed, instead of holding CI until its limit."""
from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_hung_test_fails_with_its_stack_and_the_run_goes_on(tmp_path):
    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    # the settings this suite runs with: under CI's 90 minutes with room for the rest, above the longest test (224 s)
    assert 450 <= int(ini["timeout"]) <= 1200 and 0 < int(ini["faulthandler_timeout"]) < int(ini["timeout"])

    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(120)\n\n"
                                           "def test_after():\n    pass\n")
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=4",
                           "-o", "faulthandler_timeout=2", "test_hang.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=100)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-2000:]
    assert time.monotonic() - t < 60
    assert "Timeout (>4.0s) from pytest-timeout" in out and "1 failed, 1 passed" in out, out[-2000:]
    assert "Timeout (0:00:02)!" in out and "test_hang.py\", line 4 in test_hangs" in out, out[-2000:]  # faulthandler
