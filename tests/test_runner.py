"""steve1_ray.runner: every job's command line is read the same way (files, presets, overlays, overrides, --help,
--print-config, exit 2 on a config error, the resolved config printed once and saved beside the outputs)."""
from __future__ import annotations

import importlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from steve1_ray.cli import COMMANDS
from steve1_ray.config import ConfigError, check, describe_fields, field_docs, preset_path
from steve1_ray.runner import Job, run_job

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Inner:
    depth: int = 2
    """how deep"""


@dataclass
class ToyConfig:
    """A toy job's config."""

    out: str = ""
    """where the toy writes"""
    steps: int = 3
    """how many steps"""
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    """a nested section"""

    def __post_init__(self):
        check(self.steps >= 1, f"steps={self.steps} must be >= 1")


def _toy(ran: list, **kw) -> Job:
    def run(cfg):
        ran.append(cfg)
        if cfg.steps == 99:
            raise FileNotFoundError("no such thing: give a real one")
        return 0
    return Job("toy", ToyConfig, run, **kw)


def test_overrides_files_overlays_and_prefixed_list_overrides(tmp_path, capsys):
    ran: list = []
    a = tmp_path / "a.yaml"
    a.write_text("steps: 5\ninner: {depth: 7}\ntags: [x]\n")
    b = tmp_path / "b.yaml"
    b.write_text("fast: {steps: 1}\nslow: {steps: 9}\n")
    assert run_job(_toy(ran), ["--config", str(a), "inner.depth=8", "tags=[y, z]"]) == 0
    assert (ran[-1].steps, ran[-1].inner.depth, ran[-1].tags) == (5, 8, ["y", "z"])
    assert run_job(_toy(ran), ["--config", str(a), "--config", str(b), "--overlay", "slow"]) == 0
    assert (ran[-1].steps, ran[-1].inner.depth) == (9, 7)  # files in order, the overlay's section of each
    assert run_job(_toy(ran, list_overrides={"t.": "tags"}), ["--config", str(a), "t.q", "t.r=1"]) == 0
    assert ran[-1].tags == ["x", "q", "r=1"]  # appended after the file's entries, prefix stripped
    out = capsys.readouterr().out
    assert out.count("[toy] resolved config:") == 3  # printed once per run, as YAML
    assert yaml.safe_load(out.split("[toy] resolved config:\n")[1].split("[toy]")[0])["inner"] == {"depth": 8}


def test_config_errors_exit_2_with_the_message_and_run_nothing(capsys):
    ran: list = []
    assert run_job(_toy(ran), ["steps=0"]) == 2
    assert "steve1 toy: steps=0 must be >= 1" in capsys.readouterr().err
    assert run_job(_toy(ran), ["stepz=4"]) == 2
    assert "unknown key(s) ['stepz']; known keys" in capsys.readouterr().err
    assert run_job(_toy(ran), ["steps"]) == 2
    assert "must look like key=value" in capsys.readouterr().err
    assert run_job(_toy(ran), ["--config", "/nonexistent.yaml"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert ran == []
    # an error the job declares as bad input: exit 2 with its message, no traceback
    assert run_job(_toy(ran, errors=(FileNotFoundError,)), ["steps=99"]) == 2
    assert "steve1 toy: no such thing" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):  # undeclared errors are bugs: they keep their traceback
        run_job(_toy([]), ["steps=99"])


def test_print_config_and_save_as(tmp_path, capsys):
    ran: list = []
    assert run_job(_toy(ran, save_as=lambda c: Path(c.out) / "toy.yaml"), [f"out={tmp_path}", "--print-config"]) == 0
    assert ran == [] and not (tmp_path / "toy.yaml").exists()
    assert run_job(_toy(ran, save_as=lambda c: Path(c.out) / "toy.yaml"), [f"out={tmp_path}", "steps=4"]) == 0
    assert yaml.safe_load((tmp_path / "toy.yaml").read_text())["steps"] == 4


def test_help_lists_every_field_with_its_docstring(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_job(_toy([]), ["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "A toy job's config." in text
    for line in ("steps [3]", "how many steps", "inner.depth [2]", "how deep", "tags [[]]", 'out [""]'):
        assert line in text


def test_field_docs_reads_the_docstrings_under_the_fields():
    assert field_docs(ToyConfig) == {"out": "where the toy writes", "steps": "how many steps", "tags": "",
                                     "inner": "a nested section"}
    assert [r[0] for r in describe_fields(ToyConfig)] == ["out", "steps", "tags", "inner.depth"]


def test_presets_are_found_one_way():
    assert preset_path("train", "debug").resolve() == (REPO / "configs" / "train" / "debug.yaml").resolve()
    assert preset_path("sweep", "debug").is_file() and preset_path("eval", "crafter").is_file()
    assert preset_path("train", "my.yaml") == Path("my.yaml")  # a file name is a file
    with pytest.raises(ConfigError, match=r"unknown prior preset 'nope': use one of \['debug', 'default', 'world'\]"):
        preset_path("prior", "nope")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_job_runs_on_the_runner_and_documents_its_fields(command, capsys):
    """Each job's main is the one runner: --help lists its config's fields with their docstrings, and a bad key
    exits 2 with the message (nothing starts: no Ray, no files)."""
    module = importlib.import_module(COMMANDS[command][0])
    job = module.JOB
    assert isinstance(job, Job) and job.name == command
    rows = describe_fields(job.config)
    undocumented = [key for key, _, doc in rows if not doc]
    assert not undocumented, f"{command}: fields without a docstring (`--help` shows nothing for them): {undocumented}"
    with pytest.raises(SystemExit):
        module.main(["--help"])
    text = capsys.readouterr().out
    assert f"steve1 {command}" in text and f"fields of {job.config.__name__}" in text
    assert module.main(["no_such_key=1"]) == 2
    assert "unknown key(s) ['no_such_key']" in capsys.readouterr().err


def test_bare_words_fill_the_positional_fields(tmp_path, capsys):
    from steve1_ray.models.formats import main

    assert main(["write-model", "debug", str(tmp_path / "d.model"), "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out.split("resolved config:\n")[1])
    assert (cfg["action"], cfg["src"], cfg["dst"]) == ("write-model", "debug", str(tmp_path / "d.model"))
    assert main(["inspect", "a", "b", "c"]) == 2
    assert "too many words" in capsys.readouterr().err
    assert main(["convert", "a.weights", "b.weights"]) == 2
    assert "add model=" in capsys.readouterr().err


def test_a_job_script_prints_its_config_and_exits_without_running(tmp_path):
    """`python jobs/train.py --config debug --print-config`: the preset resolved, nothing trained."""
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "train.py"), "--config", "debug", "lr=1e-4",
                          f"storage_path={tmp_path}", "--print-config"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = yaml.safe_load(out.stdout.split("[train] resolved config:\n")[1])
    assert cfg["model"] == "debug" and cfg["lr"] == 1e-4
    assert not any(tmp_path.iterdir())
