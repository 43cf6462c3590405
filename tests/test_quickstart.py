"""The quick start itself, with the tiniest settings: every stage runs for real and leaves its outputs."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from steve1_ray.numerics import ISA_ENV, has_isa

ISA_KEYS = tuple(ISA_ENV["avx2"])
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    """The repository built as a wheel and installed into a folder of its own (its dependencies come from this
    environment): what a plain `pip install .` gives a user, used from elsewhere, away from this checkout."""
    import shutil

    root = tmp_path_factory.mktemp("wheel")
    build = {**os.environ, "PIP_NO_INPUT": "1"}
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools builds in the tree: no stale files in the wheel
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(root / "dist"), str(REPO)], check=True, timeout=900, env=build, cwd=root)
    wheel = next((root / "dist").glob("steve1_ray-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(root / "site"),
                    str(wheel)], check=True, timeout=900, env=build, cwd=root)
    return root / "site"


def _from_wheel(site: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(site), "RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    env.pop("RAY_ADDRESS", None)
    return env


OPTIONAL_IMPORTS = {"minerl": "steve1_ray/world/minerl_env.py"}  # the `minerl` extra, imported only there


def test_every_package_the_code_imports_is_a_declared_dependency():
    """The wheel installs with --no-deps (above), so a plain `pip install` would miss an imported package that
    pyproject.toml does not name: every third-party import of steve1_ray must map to a declared dependency."""
    import ast
    import importlib.metadata as md
    import re as _re
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    norm = lambda name: _re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    declared = {norm(_re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0]) for d in project["dependencies"]}
    dists = md.packages_distributions()
    missing = {}
    for path in sorted((REPO / "steve1_ray").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top, where = name.split(".")[0], str(path.relative_to(REPO))
                if top in sys.stdlib_module_names or top in ("steve1_ray", "__future__"):
                    continue
                if OPTIONAL_IMPORTS.get(top) == where:
                    continue
                if not {norm(d) for d in dists.get(top, [top])} & declared:
                    missing.setdefault(top, where)
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"


def test_a_wheel_install_tokenizes_and_resolves_every_preset(wheel_site, tmp_path):
    """From a wheel, in another folder: prompts tokenize (the CLIP vocabulary is package data) and every named
    preset resolves (before: "unknown preset ...: use one of []", and no vocabulary without clip-anytorch)."""
    code = ("import json, steve1_ray, steve1_ray.config as C\n"
            "from steve1_ray.models.tokenizer import tokenize\n"
            "kinds = {k: C.preset_names(k) for k in ('train', 'eval', 'data', 'embedder', 'prior', 'sweep')}\n"
            "print(json.dumps({'file': steve1_ray.__file__, 'row': tokenize(['chop a tree'])[0, :6].tolist(),"
            " 'presets': kinds}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_from_wheel(wheel_site), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["file"].startswith(str(wheel_site))
    assert got["row"] == [49406, 16663, 320, 2677, 49407, 0]  # <sot> chop a tree <eot>
    checkout = {k: sorted(p.stem for p in (REPO / "configs" / k).glob("*.yaml")) for k in got["presets"]}
    assert got["presets"] == checkout and all(checkout.values())
    for preset in ("debug", "finetune", "paper"):
        r = subprocess.run([sys.executable, "-m", "steve1_ray.cli", "train", "--config", preset, "--print-config"],
                           cwd=tmp_path, env=_from_wheel(wheel_site), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "resolved config" in r.stdout, (preset, r.stderr[-2000:])
    r = subprocess.run([sys.executable, "-m", "steve1_ray.cli", "serve", "--print-config"], cwd=tmp_path,
                       env=_from_wheel(wheel_site), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "policy: released" in r.stdout, r.stderr[-2000:]


def test_quickstart_config_rejects_bad_values():
    from steve1_ray.config import ConfigError, load_config
    from steve1_ray.quickstart import QuickstartConfig

    with pytest.raises(ConfigError, match="episodes=1"):
        load_config(QuickstartConfig, [], ["episodes=1"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(QuickstartConfig, [], ["episode=4"])
    with pytest.raises(ConfigError, match="world.tree_logs"):
        load_config(QuickstartConfig, [], ["world.tree_logs=0"])
    with pytest.raises(ConfigError, match="segment_goals"):
        load_config(QuickstartConfig, [], ["segment_goals=maybe"])
    with pytest.raises(ConfigError, match="world.cow_move"):
        load_config(QuickstartConfig, [], ["world.cow_move=2"])
    with pytest.raises(ConfigError, match="crafter's scripted demonstrators"):
        load_config(QuickstartConfig, [], ["world.backend=minerl"])
    with pytest.raises(ConfigError, match="event_frames"):
        load_config(QuickstartConfig, [], ["event_frames=-1"])
    with pytest.raises(ConfigError, match="focus_fraction"):
        load_config(QuickstartConfig, [], ["focus_fraction=1.5"])
    with pytest.raises(ConfigError, match="appetite='greedy'"):
        load_config(QuickstartConfig, [], ["appetite=greedy"])
    with pytest.raises(ConfigError, match="stop_at_full: expected true/false, got 'maybe'"):
        load_config(QuickstartConfig, [], ["stop_at_full=maybe"])
    for hostile in ("free_play=maybe", "free_play=[1]", "free_play=2"):
        with pytest.raises(ConfigError, match="free_play"):
            load_config(QuickstartConfig, [], [hostile])
    with pytest.raises(ConfigError, match="goal_lr_scale"):
        load_config(QuickstartConfig, [], ["goal_lr_scale=-10"])
    with pytest.raises(ConfigError, match="finetune_frames"):
        load_config(QuickstartConfig, [], ["finetune_frames=0"])
    with pytest.raises(ConfigError, match="event_horizon"):
        load_config(QuickstartConfig, [], ["event_horizon=-40"])
    assert load_config(QuickstartConfig, [], ["tiny=true", "event_frames=131072"]).event_frames == 512
    for bad in ("-2", "nan", "inf"):  # refused before anything runs, not by the evaluation at the end
        with pytest.raises(ConfigError, match="cond_scale"):
            load_config(QuickstartConfig, [], ["tiny=true", f"cond_scale={bad}"])
    # the default is the fine-tuning scenario, in the release's world, evaluating the five prompts
    cfg = load_config(QuickstartConfig, [], [])
    assert not cfg.from_scratch and cfg.world.tree_logs == 4 and len(cfg.eval_prompts) == 5
    assert cfg.eval_episodes >= 12 and 0.0 in cfg.eval_scales and max(cfg.eval_scales) > 0
    assert cfg.prompt in cfg.eval_prompts  # the rollout a newcomer watches is one the report judges
    assert load_config(QuickstartConfig, [], ["tiny=true"]).eval_prompts == [cfg.prompt]  # also in a smoke run
    assert load_config(QuickstartConfig, [], ["tiny=true", "prompt=drink water"]).eval_prompts == ["drink water"]
    # the quick start asks the question `steve1 evaluate --config crafter` asks, and its video is one of the cells
    from steve1_ray.config import preset_path
    from steve1_ray.evaluate.run import EvalConfig

    crafter = load_config(EvalConfig, [preset_path("eval", "crafter")], [])
    assert cfg.eval_scales == crafter.cond_scales and cfg.eval_prompts == crafter.prompts
    assert cfg.eval_episodes == crafter.episodes and cfg.eval_steps == crafter.max_steps
    assert cfg.cond_scale in cfg.eval_scales
    tiny = load_config(QuickstartConfig, [], ["tiny=true"])
    assert 0.0 in tiny.eval_scales and tiny.cond_scale in tiny.eval_scales
    assert load_config(QuickstartConfig, [], ["tiny=true", "cond_scale=0"]).eval_scales == [0.0]


def test_quickstart_notes_only_a_world_that_differs_from_the_release_s(capsys):
    """The committed manifest predates `world.log_hits`: a field it lacks is that field's default, so the release's
    own world gives no note; another world does."""
    from steve1_ray.quickstart import QuickstartConfig, _release
    from steve1_ray.world.config import WorldConfig

    _release(QuickstartConfig())
    assert "were trained in world" not in capsys.readouterr().out
    _release(QuickstartConfig(world=WorldConfig(tree_logs=4, log_hits=3)))
    assert "were trained in world" in capsys.readouterr().out


def test_quickstart_refuses_a_release_that_does_not_match_its_manifest(tmp_path):
    import shutil

    from steve1_ray.quickstart import QuickstartConfig, _release
    from steve1_ray.release import released_world

    shutil.copytree(released_world(), tmp_path / "rw")
    (tmp_path / "rw" / "mineclip.pth").write_bytes(b"not the released file")
    with pytest.raises(SystemExit, match="mineclip.pth"):
        _release(QuickstartConfig(release=str(tmp_path / "rw")))
    with pytest.raises(SystemExit, match="from_scratch=true"):
        _release(QuickstartConfig(release=str(tmp_path / "missing")))


def test_quickstart_free_play_gives_the_fine_tune_its_recording(stage_plan, tmp_path):
    """`free_play=true`: the fine-tune meets the zero goal on the fresh recording's free play only (`steve1 train
    free_play=<that recording>`); off, no such argument. Planned without running the jobs."""
    from conftest import PlanStop
    from steve1_ray.quickstart import QuickstartConfig, run_quickstart

    stage_plan.stop = lambda command, argv: command == "train"
    for free_play in (True, False):
        out = tmp_path / str(free_play)
        with pytest.raises(PlanStop):
            run_quickstart(QuickstartConfig(out=str(out), free_play=free_play, appetite="needs", cpu_isa=""))
        (_, record), *_, (command, train) = stage_plan
        assert command == "train" and "appetite=needs" in record and "focus_order=cycle" in record
        assert f"goal_segments={out / 'world'}" in train
        assert [a for a in train if a.startswith("free_play=")] == ([f"free_play={out / 'world'}"] if free_play else [])
        stage_plan.clear()


@pytest.mark.slow
def test_quickstart_tiny_end_to_end(tmp_path):
    import yaml

    out = tmp_path / "qs"
    env = {k: v for k, v in os.environ.items() if k not in (*ISA_KEYS, "RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="disabled", PYTHONWARNINGS="ignore")
    # cpu_isa= (the machine's own kernels) reaches every stage's job: each would pin AVX2 by default, and on an
    # AVX-512 machine refuse to (torch chose its kernels in the quick start's process already)
    proc = subprocess.run([sys.executable, "-m", "steve1_ray.cli", "quickstart", "tiny=true", f"out={out}",
                           "port=8123", "world.tree_logs=2", "event_frames=512", "from_scratch=true", "cpu_isa="],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    own = summary["cpu_capability"]
    assert proc.stdout.count(f'CPU kernels: {own} (cpu_isa="")') >= 6 and "$ steve1 train " in proc.stdout
    assert all(line.endswith(" cpu_isa=") for line in proc.stdout.splitlines() if line.startswith("    $ steve1 "))
    # every stage ran and produced what the next one reads
    assert (out / "world" / "index.json").exists() and (out / "world" / "captions.jsonl").exists()
    # recording and evaluation play in the same world (tree_logs reaches both)
    recorded = yaml.safe_load((out / "world" / "record_config.yaml").read_text())["world"]
    assert recorded["tree_logs"] == 2 and recorded["zombie_rate"] == 0.2
    assert yaml.safe_load((out / "eval" / "config.yaml").read_text())["world"] == recorded
    assert (out / "embedder" / "mineclip.pth").exists()
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    assert manifest["counts"]["episodes"] >= 2 and manifest["counts"]["quarantined"] == 0
    assert (out / "train" / "policy.weights").stat().st_size > 0
    # the event-goal fine-tune starts from that policy, and it is what is served and evaluated
    assert (out / "train" / "policy_events.weights").stat().st_size > 0
    ft = yaml.safe_load(next((out / "train" / "policy_events").glob("checkpoint_*/train_config.yaml")).read_text())
    assert ft["goal_event_pick"] == "last" and Path(ft["in_weights"]).resolve() == (out / "train" / "policy.weights").resolve()
    assert "/policy_events/checkpoint_" in summary["checkpoint"]
    assert "/policy_events/checkpoint_" in yaml.safe_load((out / "eval" / "config.yaml").read_text())["policy"]
    assert (out / "prior" / "prior.pt").exists()
    video = (out / "play" / "rollout.mp4").read_bytes()
    assert video[4:8] == b"ftyp", "the rollout video is not an mp4"
    report = (out / "eval" / "report.md").read_text()
    assert "collect a sapling" in report and "uncond" in report  # the played prompt is the one evaluated
    assert list((out / "train").rglob("events.out.tfevents.*")), "no TensorBoard event files"
    assert "quickstart done" in proc.stdout and summary["report"].endswith("report.md")



@pytest.mark.slow
def test_quickstart_tiny_finetunes_from_the_committed_release(wheel_site, tmp_path):
    """The default scenario, run from a wheel install in another folder: fresh recording → dataset with the released
    embedder → fine-tune the released STEVE-1 policy → serve with the released prior → play → evaluate against the
    unconditioned agent and the foundation."""
    import yaml

    release = wheel_site / "steve1_ray" / "released" / "world"  # package data of the installed wheel
    out = tmp_path / "qs"
    env = _from_wheel(wheel_site)
    proc = subprocess.run([sys.executable, "-m", "steve1_ray.cli", "quickstart", "tiny=true", f"out={out}",
                           "port=8126"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    if has_isa("avx2"):  # every stage's job runs the pinned kernels; the commands show the default
        assert json.loads((out / "summary.json").read_text())["cpu_capability"] == "AVX2"
        assert proc.stdout.count('CPU kernels: AVX2 (cpu_isa="avx2")') >= 5
    commands = [line for line in proc.stdout.splitlines() if line.startswith("    $ steve1 ")]
    assert len(commands) >= 5 and not any("cpu_isa" in line for line in commands)
    recorded = yaml.safe_load((out / "world" / "record_config.yaml").read_text())
    assert recorded["seed"] == 0 and recorded["world"]["tree_logs"] == 4  # other seeds than the release's, its world
    assert "eat_cow" in recorded["focus_goals"] and recorded["focus_order"] == "cycle"
    ft = yaml.safe_load(next((out / "train" / "steve1").glob("checkpoint_*/train_config.yaml")).read_text())
    # from the released STEVE-1 policy (goal-conditioned), at its event stage's lr, the goal layer at the same lr
    # with its own architecture (steve1.model: the fovea preset, since session 29)
    assert Path(ft["in_weights"]) == release / "steve1.weights" and Path(ft["model"]) == release / "steve1.model"
    assert ft["goal_event_pick"] == "last" and ft["p_uncond"] > 0 and ft["goal_lr_scale"] == 1
    assert ft["goal_segments"] == str(out / "world")  # segment goals from the fresh recording
    assert ft["lr"] == 3e-4
    assert not (out / "embedder").exists() and not (out / "prior").exists()  # the released ones are used
    data = json.loads((out / "shards" / "manifest.json").read_text())
    assert Path(data["options"]["mineclip_path"]) == release / "mineclip.pth"
    eval_cfg = yaml.safe_load((out / "eval" / "config.yaml").read_text())
    assert Path(eval_cfg["embedder"]) == release / "mineclip.pth" and Path(eval_cfg["prior"]) == release / "prior.pt"
    assert Path(eval_cfg["baseline_policy"]) == release / "foundation.model"
    report = (out / "eval" / "report.md").read_text()
    assert report.index("## Is each prompt followed?") < report.index("## Every goal and scale")
    assert "foundation" in report
    # the user sees the work move: the policy stage's progress with an ETA, and the stage-time table at the end
    assert "[train] step" in proc.stdout and "ETA" in proc.stdout
    assert re.search(r"^\| total +\| \S+ \|$", proc.stdout, re.M)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"].startswith("fine-tune from")


def test_a_quickstart_folder_resumes_only_with_the_cpu_kernels_it_was_made_with(tmp_path, capsys):
    """Finished stages are skipped on a re-run: a folder trained with the machine's own kernels (before session 41,
    or cpu_isa=) must not be finished with the pinned ones, whose rounding differs."""
    from steve1_ray.quickstart import main

    out = tmp_path / "qs"
    out.mkdir()
    (out / "quickstart_config.yaml").write_text("episodes: 24\n")  # made before cpu_isa existed
    assert main([f"out={out}"]) == 2
    assert 'made with cpu_isa=""' in capsys.readouterr().err
    assert (out / "quickstart_config.yaml").read_text() == "episodes: 24\n"
    (out / "quickstart_config.yaml").write_text("cpu_isa: avx2\n")
    assert main([f"out={out}", "cpu_isa="]) == 2
    assert 'made with cpu_isa="avx2"' in capsys.readouterr().err

