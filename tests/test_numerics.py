"""`steve1_ray.numerics.pin_cpu_isa`: the CPU kernels a training process runs, pinned so that an AVX-512 machine
trains what an AVX2 machine trained (benchmarks/RESULTS.md, session 41). The pin only takes in a process whose torch
has not chosen its kernels yet, so each case runs in a fresh interpreter."""
import json
import os
import subprocess
import sys

import pytest

from steve1_ray.numerics import CpuIsaError, cpu_flags, pin_cpu_isa

HAS_AVX2 = "avx2" in cpu_flags()
ENV_KEYS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def _fresh(code: str, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    proc = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


PIN = """
import json, os, torch
from steve1_ray.numerics import pin_cpu_isa
before = None
if {op_first}:
    (torch.ones(64) * 2).sum()
    before = torch.backends.cpu.get_cpu_capability()
try:
    got, err = pin_cpu_isa({isa!r}), None
except ValueError as e:
    got, err = None, str(e)
x = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
print(json.dumps({{"got": got, "err": err, "before": before, "now": torch.backends.cpu.get_cpu_capability(),
                  "env": {{k: os.environ.get(k) for k in {keys!r}}}, "sum": float((x @ x).sum())}}))
"""


@pytest.mark.skipif(not HAS_AVX2, reason="the CPU has no AVX2")
def test_pin_takes_in_a_fresh_process_and_reaches_its_children():
    r = _fresh(PIN.format(op_first=False, isa="avx2", keys=ENV_KEYS))
    assert r["err"] is None and r["got"] == r["now"] == "AVX2"
    assert r["env"] == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    # a process it starts (a Ray worker, a stage) runs the same kernels
    child = _fresh("import json, torch; print(json.dumps(torch.backends.cpu.get_cpu_capability()))",
                   **r["env"])
    assert child == "AVX2"


@pytest.mark.skipif(not HAS_AVX2, reason="the CPU has no AVX2")
def test_pin_after_torch_chose_other_kernels_is_refused_not_silently_ignored():
    r = _fresh(PIN.format(op_first=True, isa="avx2", keys=ENV_KEYS))
    if r["before"] == "AVX2":  # an AVX2-only machine: its kernels are the pinned ones already
        assert r["err"] is None and r["got"] == "AVX2"
    else:
        assert r["got"] is None and "chose its" in r["err"] and "ATEN_CPU_CAPABILITY=avx2" in r["err"]
        assert r["now"] == r["before"]


def test_no_pin_leaves_the_machine_its_own_kernels():
    r = _fresh(PIN.format(op_first=False, isa="", keys=ENV_KEYS))
    assert r["err"] is None and r["got"] == r["now"] and r["env"] == dict.fromkeys(ENV_KEYS)


@pytest.mark.skipif(not HAS_AVX2, reason="the CPU has no AVX2")
def test_a_conflicting_setting_in_the_environment_is_refused_and_nothing_is_half_set():
    r = _fresh(PIN.format(op_first=False, isa="avx2", keys=ENV_KEYS), ATEN_CPU_CAPABILITY="default")
    assert r["got"] is None and "ATEN_CPU_CAPABILITY=default" in r["err"] and "cpu_isa=" in r["err"]
    assert r["env"] == {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": None, "ONEDNN_MAX_CPU_ISA": None}


CONV = """
import hashlib, json, torch
{pin}
g = torch.Generator().manual_seed(0)
x, w = torch.randn(4, 16, 32, 32, generator=g), torch.randn(32, 16, 3, 3, generator=g)
y = torch.nn.functional.conv2d(x, w, padding=1) @ torch.randn(32, 32, generator=g)
print(json.dumps(hashlib.sha256(y.numpy().tobytes()).hexdigest()))
"""


@pytest.mark.skipif(not HAS_AVX2, reason="the CPU has no AVX2")
def test_the_pin_in_process_computes_what_the_variables_set_at_start_compute():
    """oneDNN's convolution and MKL's matmul, not only torch's own kernels, follow the in-process pin."""
    pinned = _fresh(CONV.format(pin="from steve1_ray.numerics import pin_cpu_isa; pin_cpu_isa('avx2')"))
    at_start = _fresh(CONV.format(pin=""), ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2",
                      ONEDNN_MAX_CPU_ISA="AVX2")
    assert pinned == at_start


def test_a_cpu_without_avx2_keeps_its_kernels_and_says_so(tmp_path, capsys, monkeypatch):
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 avx\n\nprocessor\t: 1\nflags\t\t: fpu sse sse2 avx\n")
    assert cpu_flags(info) == {"fpu", "sse", "sse2", "avx"}
    pin_cpu_isa("avx2", cpuinfo=info)
    assert "could not find AVX2" in capsys.readouterr().out
    assert not any(k in os.environ for k in ENV_KEYS)
    assert cpu_flags(tmp_path / "missing") == set()


def test_unknown_isas_are_refused():
    from steve1_ray.config import ConfigError
    from steve1_ray.release import ReleaseConfig

    with pytest.raises(CpuIsaError, match="choose one of"):
        pin_cpu_isa("avx512")
    with pytest.raises(ConfigError, match="cpu_isa"):
        ReleaseConfig(cpu_isa="avx512")
    assert ReleaseConfig().cpu_isa == "avx2"  # the committed release's kernels
