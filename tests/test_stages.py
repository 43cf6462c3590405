"""steve1_ray.stages.Stages: the pipeline runner of the quick start and the release (skip, refuse, fail, table)."""
from __future__ import annotations

import re
import sys
import types

import pytest

from steve1_ray.stages import Stages


@pytest.fixture
def job(monkeypatch):
    """A job module `fake_stage_job` whose main(argv) records its calls and writes argv[0] (its done file)."""
    calls = []
    mod = types.ModuleType("fake_stage_job")

    def main(argv):
        calls.append(list(argv))
        if argv[1] == "fail":
            return 2
        with open(argv[0], "w") as f:
            f.write("done")
        return 0

    mod.main = main
    monkeypatch.setitem(sys.modules, "fake_stage_job", mod)
    return calls


def test_a_done_stage_is_skipped_and_the_table_says_so(tmp_path, job, capsys):
    st = Stages(tmp_path, "demo")
    st.run("first", "fake", "fake_stage_job", [str(tmp_path / "a"), "x"], done=tmp_path / "a")
    st.timed("by hand", 1.5)
    assert job == [[str(tmp_path / "a"), "x"]]
    again = Stages(tmp_path, "demo")
    again.run("first", "fake", "fake_stage_job", [str(tmp_path / "a"), "x"], done=tmp_path / "a")
    assert len(job) == 1 and "already done" in capsys.readouterr().out
    table = again.table()
    assert re.search(r"^\| first +\| skipped \(done before\) \|$", table, re.M)
    assert re.search(r"^\| total +\| \S+ \|$", table, re.M)
    assert "by hand" in st.table() and "2s" in st.table()


def test_a_stage_done_with_other_arguments_is_refused_not_reused(tmp_path, job):
    Stages(tmp_path, "demo").run("first", "fake", "fake_stage_job", [str(tmp_path / "a"), "episodes=3"],
                                 done=tmp_path / "a")
    with pytest.raises(SystemExit, match=r"demo: stage 'first' was done .* with other arguments \(episodes=3, "
                                         r"episodes=4\)"):
        Stages(tmp_path, "demo").run("first", "fake", "fake_stage_job", [str(tmp_path / "a"), "episodes=4"],
                                     done=tmp_path / "a")
    assert len(job) == 1


def test_a_failing_stage_stops_the_pipeline_with_its_name(tmp_path, job):
    with pytest.raises(SystemExit, match="demo: stage 'bad' failed \\(exit 2\\)"):
        Stages(tmp_path, "demo").run("bad", "fake", "fake_stage_job", [str(tmp_path / "b"), "fail"],
                                     done=tmp_path / "b")
    assert not list((tmp_path / ".stages").glob("01-fake*.json"))  # nothing recorded for a failed stage


def test_the_pipelines_cpu_isa_reaches_every_stage_but_not_its_resume_record(tmp_path, job, capsys):
    """`steve1 quickstart cpu_isa=` runs each stage's job with `cpu_isa=` (each job pins AVX2 by default); the
    default adds nothing, so a folder resumes whichever way its stages were recorded (the pipeline checks cpu_isa)."""
    Stages(tmp_path, "demo", cpu_isa="").run("first", "fake", "fake_stage_job", [str(tmp_path / "a"), "x"],
                                             done=tmp_path / "a")
    assert job == [[str(tmp_path / "a"), "x", "cpu_isa="]]
    assert f"$ steve1 fake {tmp_path / 'a'} x cpu_isa=" in capsys.readouterr().out
    again = Stages(tmp_path, "demo")  # the default: the record matches, the stage is skipped
    again.run("first", "fake", "fake_stage_job", [str(tmp_path / "a"), "x"], done=tmp_path / "a")
    again.run("second", "fake", "fake_stage_job", [str(tmp_path / "b"), "y"], done=tmp_path / "b")
    assert job[1:] == [[str(tmp_path / "b"), "y"]] and "already done" in capsys.readouterr().out


def test_one_position_two_outputs_each_keeps_its_own_record(tmp_path, job, capsys):
    """A stage whose output folder depends on an option (the release's `text_anchor`): run with one, then the other,
    then the first again, each resumes its own folder (it was refused once the second run overwrote a record kept
    by position alone); a record by position from an older folder still counts."""
    def stage(out, arg):
        Stages(tmp_path, "demo").run("first", "fake", "fake_stage_job", [str(tmp_path / out), arg],
                                     done=tmp_path / out)

    stage("a", "anchor=0")
    stage("b", "anchor=5")
    stage("a", "anchor=0")
    stage("b", "anchor=5")
    assert job == [[str(tmp_path / "a"), "anchor=0"], [str(tmp_path / "b"), "anchor=5"]]
    with pytest.raises(SystemExit, match="with other arguments"):
        stage("a", "anchor=1")  # the same folder with another value is still refused
    (tmp_path / "c").write_text("done")  # a folder of an older run: its record is by position
    (tmp_path / ".stages" / "01-fake.json").write_text('{"command": "fake", "argv": ["%s", "x"]}' % (tmp_path / "c"))
    stage("c", "x")
    with pytest.raises(SystemExit, match="with other arguments"):
        stage("c", "y")
    assert len(job) == 2
