"""`steve1_ray.numerics.pin_cpu_isa`: the CPU kernels a training process runs, pinned so that an AVX-512 machine
trains what an AVX2 machine trained (benchmarks/RESULTS.md, session 41). The pin only takes in a process whose torch
has not chosen its kernels yet, so each case runs in a fresh interpreter."""
import json
import os
import subprocess
import sys

import pytest

from steve1_ray.numerics import CpuIsaError, cpu_flags, has_isa, pin_cpu_isa

HAS_AVX2 = has_isa("avx2")
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


def test_a_cpu_without_avx2_keeps_its_kernels_and_says_so(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 avx\n\nprocessor\t: 1\nflags\t\t: fpu sse sse2 avx\n")
    assert cpu_flags(info) == {"fpu", "sse", "sse2", "avx"}
    assert cpu_flags(tmp_path / "missing") == set()
    code = f"""
import contextlib, io, json, os, torch
from steve1_ray.numerics import pin_cpu_isa
out = io.StringIO()
with contextlib.redirect_stdout(out):
    got = pin_cpu_isa("avx2", cpuinfo={str(info)!r})
print(json.dumps({{"got": got, "said": out.getvalue(), "env": {{k: os.environ.get(k) for k in {ENV_KEYS!r}}}}}))
"""
    r = _fresh(code)  # a clean environment: nothing may be set
    assert "could not find AVX2" in r["said"] and r["env"] == dict.fromkeys(ENV_KEYS)


def test_unknown_isas_are_refused():
    from steve1_ray.config import ConfigError
    from steve1_ray.release import ReleaseConfig

    with pytest.raises(CpuIsaError, match="choose one of"):
        pin_cpu_isa("avx512")
    with pytest.raises(ConfigError, match="cpu_isa"):
        ReleaseConfig(cpu_isa="avx512")
    assert ReleaseConfig().cpu_isa == "avx2"  # the committed release's kernels


TOY_JOB = """
import json, os, sys
from dataclasses import dataclass
import torch
from steve1_ray.runner import Job, run_job

@dataclass
class Toy:
    steps: int = 1

@dataclass
class PinsItself:
    cpu_isa: str = "avx2"

def run(cfg):
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    print("RESULT " + json.dumps({{"now": torch.backends.cpu.get_cpu_capability(), "cfg": vars(cfg),
                                  "aten": os.environ.get("ATEN_CPU_CAPABILITY"), "sum": float((x @ x).sum())}}))

rc = run_job(Job("toy", {config}, run), {argv!r})
print("RC " + str(rc))
"""


def _toy(argv: list[str], config: str = "Toy") -> tuple[int, dict | None, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    proc = subprocess.run([sys.executable, "-c", TOY_JOB.format(config=config, argv=argv)], env=clean,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    result = next((json.loads(line[7:]) for line in lines if line.startswith("RESULT ")), None)
    return int(next(line[3:] for line in lines if line.startswith("RC "))), result, proc.stdout + proc.stderr


@pytest.mark.skipif(not HAS_AVX2, reason="the CPU has no AVX2")
def test_every_job_pins_the_kernels_by_default_and_cpu_isa_empty_keeps_the_machines():
    """`steve1 train`, `evaluate`, `serve`, ... run alone compute what the quick start's stages compute."""
    rc, r, out = _toy(["steps=2"])
    assert rc == 0 and r["now"] == "AVX2" and r["aten"] == "avx2" and r["cfg"] == {"steps": 2}, out
    assert '[toy] CPU kernels: AVX2 (cpu_isa="avx2")' in out
    rc, own, out = _toy(["cpu_isa="])
    assert rc == 0 and own["aten"] is None and own["now"] == _fresh(
        "import json, torch; print(json.dumps(torch.backends.cpu.get_cpu_capability()))"), out
    assert '(cpu_isa="")' in out
    # a job whose config has its own cpu_isa (quickstart, release-world) gets the key and pins itself
    rc, mine, out = _toy(["cpu_isa="], config="PinsItself")
    assert rc == 0 and mine["cfg"] == {"cpu_isa": ""} and mine["aten"] is None and "CPU kernels" not in out, out


def test_an_unknown_cpu_isa_is_a_config_error_and_runs_nothing():
    for bad in ("avx512", "0", "false"):  # not read as YAML: "0" and "false" are no way to say "the machine's own"
        rc, r, out = _toy([f"cpu_isa={bad}"])
        assert rc == 2 and r is None and f"steve1 toy: cpu_isa='{bad}': choose one of" in out, out


@pytest.mark.skipif(not HAS_AVX2, reason="the CPU has no AVX2")
def test_the_environments_own_setting_stands_unless_the_command_line_asks_for_the_pin():
    """An image or an administrator that sets one of the libraries' variables otherwise keeps it by default (the
    job says so); asking for cpu_isa=avx2 against it is refused, as in the quick start."""
    TOY = TOY_JOB.format(config="Toy", argv=["steps=2"])
    clean = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    proc = subprocess.run([sys.executable, "-c", TOY], env={**clean, "ATEN_CPU_CAPABILITY": "default"},
                          capture_output=True, text=True, timeout=120)
    assert "RC 0" in proc.stdout and '"now": "DEFAULT"' in proc.stdout, proc.stdout + proc.stderr
    assert "CPU kernels: DEFAULT (the environment's ATEN_CPU_CAPABILITY=default; cpu_isa= not applied)" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", TOY_JOB.format(config="Toy", argv=["cpu_isa=avx2"])],
                          env={**clean, "ATEN_CPU_CAPABILITY": "default"}, capture_output=True, text=True,
                          timeout=120)
    assert "RC 2" in proc.stdout and "RESULT" not in proc.stdout and "ATEN_CPU_CAPABILITY=default" in proc.stderr


def test_cpu_isa_may_stand_anywhere_on_the_command_line(tmp_path):
    """The runner takes `cpu_isa=` out before argparse, so a pipeline may append it after an option's value, and a
    job with bare words (`steve1 weights convert A B`) takes it too."""
    from dataclasses import dataclass

    from steve1_ray.runner import Job, run_job

    @dataclass
    class Words:
        action: str = ""
        src: str = ""
        steps: int = 1

    seen = []
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 3\n")
    job = Job("words", Words, seen.append, positional=("action", "src"))
    assert run_job(job, ["convert", "steps=2", "--config", str(cfg), "a.weights", "cpu_isa="]) == 0
    assert seen[-1] == Words("convert", "a.weights", 2)
    assert run_job(job, ["cpu_isa=", "convert", "b"]) == 0 and seen[-1] == Words("convert", "b", 1)


def test_a_submitted_job_whose_runtime_env_lacks_the_pin_is_warned(monkeypatch, capsys):
    """`ray job submit`: the job's workers take the job's runtime environment, not the driver's pin."""
    from steve1_ray.cluster import _warn_unpinned_job

    pin = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": {"A": "1"}}}))
    _warn_unpinned_job(pin)
    said = capsys.readouterr().out
    assert "warning: this job's workers" in said and '--runtime-env-json \'{"env_vars": {"ATEN_CPU' in said
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": pin}}))
    _warn_unpinned_job(pin)
    assert capsys.readouterr().out == ""
    same = {**pin, "ATEN_CPU_CAPABILITY": "AVX2"}  # the libraries read the values case-insensitively
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": same}}))
    _warn_unpinned_job(pin)
    assert capsys.readouterr().out == ""


@pytest.mark.skipif(not HAS_AVX2, reason="the CPU has no AVX2")
def test_no_command_chooses_kernels_when_its_module_is_imported():
    """The runner pins after `steve1 <command>` imported the command's module: an import that ran a torch
    operation (a module-level tensor) would fix the machine's kernels first, and every run would exit 2."""
    from steve1_ray.cli import COMMANDS

    modules = sorted({module for module, _ in COMMANDS.values()})
    r = _fresh("import importlib, json\n"
               f"for m in {modules!r}: importlib.import_module(m)\n"
               "from steve1_ray.numerics import pin_cpu_isa\n"
               "print(json.dumps(pin_cpu_isa('avx2')))")
    assert r == "AVX2"
