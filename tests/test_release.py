"""`steve1 release-world` and the committed release: its files match their manifest and load strictly; a tiny
release made here resumes on re-run (the quick start's fine-tune from the committed release: test_quickstart.py)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_release_config_rejects_bad_values():
    from steve1_ray.config import ConfigError, load_config
    from steve1_ray.release import ReleaseConfig

    with pytest.raises(ConfigError, match="episodes=1"):
        load_config(ReleaseConfig, [], ["episodes=1"])
    with pytest.raises(ConfigError, match="foundation_frames=0"):
        load_config(ReleaseConfig, [], ["foundation_frames=0"])
    with pytest.raises(ConfigError, match="goal_segments"):
        load_config(ReleaseConfig, [], ["goal_segments=maybe"])
    for hostile in ("free_play=maybe", "free_play=[1]", "free_play=2"):
        with pytest.raises(ConfigError, match="free_play"):
            load_config(ReleaseConfig, [], [hostile])
    with pytest.raises(ConfigError, match="event_frames=512 needs goal_frames > 0"):
        load_config(ReleaseConfig, [], ["goal_frames=0", "event_frames=512"])
    with pytest.raises(ConfigError, match="must be >= 0"):
        load_config(ReleaseConfig, [], ["goal_frames=-1"])
    with pytest.raises(ConfigError, match="text_epochs=-1"):
        load_config(ReleaseConfig, [], ["text_epochs=-1"])
    for bad in ("text_anchor=-1", "text_anchor=inf", "text_anchor=nan"):
        with pytest.raises(ConfigError, match=bad):
            load_config(ReleaseConfig, [], [bad])
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config(ReleaseConfig, [], ["steve1_policy=/no/such.model"])
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config(ReleaseConfig, [], [f"steve1_policy={REPO / 'README.md'}"])  # a file, but no .model
    with pytest.raises(ConfigError, match="needs goal_frames > 0"):
        load_config(ReleaseConfig, [], ["steve1_policy=wide", "goal_frames=0"])
    with pytest.raises(ConfigError, match="crafter's scripted demonstrators"):
        load_config(ReleaseConfig, [], ["world.backend=minerl"])
    assert load_config(ReleaseConfig, [], []).world.tree_logs == 4
    tiny = load_config(ReleaseConfig, [], ["tiny=true", "event_frames=0"])  # tiny shrinks, keeps a stage off
    assert (tiny.goal_frames, tiny.event_frames) == (512, 0)


def test_committed_release_matches_its_manifest_and_loads_strictly():
    import torch

    from steve1_ray.models.formats import GOAL_KEYS, read_state_dict
    from steve1_ray.models.loading import (RELEASE_STEVE1, RELEASE_STEVE1_MODEL, load_goal_models, load_policy_spec,
                                           released_policy_model)
    from steve1_ray.release import FILES, MAX_RELEASE_BYTES, ReleaseConfig, released_world, verify

    root = released_world()
    manifest = verify(root)  # sizes and sha256 of every file
    # since session 29 the STEVE-1 policy has its own architecture (the `fovea` preset), carried as steve1.model
    assert sorted(manifest["files"]) == sorted(FILES + (RELEASE_STEVE1, RELEASE_STEVE1_MODEL))
    assert manifest["bytes"] == sum(f["bytes"] for f in manifest["files"].values()) <= MAX_RELEASE_BYTES
    assert manifest["command"].startswith("steve1 release-world") and manifest["commit"]
    # the quick start's, serving's and the evaluation's defaults play in the release's world
    import yaml

    from steve1_ray.config import to_dict
    from steve1_ray.quickstart import QuickstartConfig
    from steve1_ray.world.config import WorldConfig, recorded_world

    made = recorded_world(manifest["world"])  # the manifest predates world.log_hits: its default
    assert to_dict(QuickstartConfig().world) == made
    serve_world = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())["applications"][0]["args"]["world"]
    eval_world = yaml.safe_load((REPO / "configs" / "eval" / "crafter.yaml").read_text())["world"]
    assert to_dict(WorldConfig(**serve_world)) == to_dict(WorldConfig(**eval_world)) == made
    # the foundation is in VPT's layout: no goal layer; a STEVE-1 policy built on it reports the missing layer
    sd, _ = read_state_dict(root / "foundation.weights")
    assert not set(GOAL_KEYS) & set(sd)
    policy = load_policy_spec(root / "foundation.model", root / "foundation.weights")
    assert policy.load_report.missing_goal_layer
    embedder, prior = load_goal_models(root / "mineclip.pth", root / "prior.pt", embed_dim=policy.cfg.embed_dim)
    assert prior is not None and embedder.embed_dim == policy.cfg.embed_dim
    for key in ("embedder", "foundation", "prior", "recordings", "steve1"):
        assert manifest["metrics"][key], key
    # the STEVE-1 policy: its own architecture (the foundation's with a fovea and the goal's FiLM on both CNNs) with
    # a trained goal layer, strictly
    assert released_policy_model(root) == RELEASE_STEVE1_MODEL
    steve1 = load_policy_spec(root / RELEASE_STEVE1_MODEL, root / RELEASE_STEVE1)
    assert steve1.cfg.fovea_shape == [48, 32] and steve1.cfg.hidsize == policy.cfg.hidsize and steve1.cfg.goal_film
    default = ReleaseConfig()  # the default command makes these files
    assert (manifest["config"]["steve1_policy"], manifest["config"]["embedder_epochs"]) == (
        default.steve1_policy, default.embedder_epochs)
    assert not steve1.load_report.missing_goal_layer
    sd1 = steve1.state_dict()
    assert any(sd1[k].abs().sum() > 0 for k in GOAL_KEYS if k in sd1)
    film = [k for k in sd1 if ".film." in k]  # trained away from their zero start, in both CNNs
    assert {k.split(".cnn.")[0] for k in film} == {"net.img_process", "net.img_process.fovea"}
    assert all(sd1[k].abs().sum() > 0 for k in film if k.endswith("weight"))
    # `released` names the same files wherever a policy, embedder or prior is asked for: as a policy, STEVE-1
    named = load_policy_spec("released")
    ours, theirs = named.state_dict(), steve1.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert named.load_report.source.endswith(RELEASE_STEVE1)
    embedder2, prior2 = load_goal_models("released", "released", embed_dim=policy.cfg.embed_dim)
    assert all(torch.equal(a, b) for a, b in zip(embedder2.state_dict().values(), embedder.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(prior2.state_dict().values(), prior.state_dict().values()))


def test_verify_names_a_changed_file(tmp_path):
    import shutil

    from steve1_ray.release import released_world, verify

    shutil.copytree(released_world(), tmp_path / "rw")
    with open(tmp_path / "rw" / "prior.pt", "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="prior.pt"):
        verify(tmp_path / "rw")


def _steve1(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "steve1_ray.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=840)


@pytest.mark.slow
def test_release_world_tiny_writes_a_verified_release_and_resumes(tmp_path):
    import yaml

    from steve1_ray.models.formats import GOAL_KEYS, read_state_dict
    from steve1_ray.release import verify

    out, work = tmp_path / "release", tmp_path / "work"
    args = ["release-world", "tiny=true", f"out={out}", f"work={work}", "goal_whiten=true",
            "event_frames=131072", "steve1_policy=wide"]  # every stage, and a STEVE-1 policy wider than the foundation
    proc = _steve1(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    manifest = verify(out)
    assert manifest["command"] == "steve1 release-world " + " ".join(args[1:])
    assert not set(GOAL_KEYS) & set(read_state_dict(out / "foundation.weights")[0])
    # the foundation is unconditioned behaviour cloning with the goal layer frozen
    def train_cfg(run):
        return yaml.safe_load(next((work / "train" / run).glob("checkpoint_*/train_config.yaml")).read_text())

    assert train_cfg("foundation")["p_uncond"] == 1.0 and train_cfg("foundation")["freeze"] == ["goal"]
    # STEVE-1: goal-conditioned from scratch, then event goals from those weights; shipped with its goal layer
    goals, events = train_cfg("steve1_goals"), train_cfg("steve1")
    assert 0 < goals["p_uncond"] < 1 and not goals["in_weights"] and not goals["freeze"]
    assert goals["goal_segments"] == str(work / "world")  # each reached segment's frames take its end clip
    assert events["in_weights"].endswith("steve1_goals.weights") and events["goal_event_pick"] == "last"
    assert set(GOAL_KEYS) <= set(read_state_dict(out / "steve1.weights")[0])
    assert set(manifest["metrics"]["steve1"]) == {"steve1_goals", "steve1"}
    # its own architecture ships beside it as steve1.model; the foundation keeps the preset's
    from steve1_ray.models.formats import read_model_file
    from steve1_ray.models.loading import load_policy_spec, released_policy_model

    assert (read_model_file(out / "steve1.model").hidsize, read_model_file(out / "foundation.model").hidsize) == (128, 64)
    assert released_policy_model(out) == "steve1.model" and released_policy_model(out, "foundation.weights") == "foundation.model"
    assert not load_policy_spec(out / "steve1.model", out / "steve1.weights").load_report.missing_goal_layer
    # the released embedder has the whitened goal space fitted on the release's own data, and everything after
    # it (the dataset the policies and the prior train on) was embedded with that file
    from steve1_ray.models.mineclip import load_mineclip

    assert load_mineclip(out / "mineclip.pth").cfg.goal_whiten
    # its text tower was then trained alone (before the whitening, on the raw goals): the video tower is the
    # embedder stage's, bit for bit, and the prior was trained on the new text side
    import torch

    from steve1_ray.train.text_tower import video_state

    def text_state(path):
        return {k: v for k, v in load_mineclip(path).state_dict().items() if "clip_model.text_model." in k}

    trained, released = video_state(load_mineclip(work / "embedder" / "mineclip.pth")), video_state(load_mineclip(out / "mineclip.pth"))
    assert all(torch.equal(trained[k], released[k]) for k in trained)
    # (the default text_anchor=5: the stage and its prior write text_tower_anchor5/ and prior_text_anchor5/)
    tuned, raw, shipped = (text_state(work / "text_tower_anchor5" / "mineclip.pth"), text_state(work / "embedder" / "mineclip.pth"),
                           text_state(out / "mineclip.pth"))
    assert all(torch.equal(tuned[k], shipped[k]) for k in tuned) and any(not torch.equal(raw[k], shipped[k]) for k in raw)
    assert manifest["metrics"]["text_tower"]["final"]["epoch"] == 1
    # the prior was trained on the shipped text tower (the whitened copy of the tuned one), not the raw embedder's
    prior_cfg = yaml.safe_load((work / "prior_text_anchor5" / "prior.yaml").read_text())
    assert prior_cfg["mineclip_path"] == str(work / "embedder_white" / "mineclip.pth")
    assert manifest["metrics"]["goal_whitening"]["frames"] > 128
    assert "embedder_white/mineclip.pth" in (work / "shards" / "manifest.json").read_text()
    assert re.search(r"^\| total +\| \S+ \|$", proc.stdout, re.M)  # the stage-time table
    # re-running resumes: every stage is skipped, the same files come out
    again = _steve1(args, tmp_path)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert again.stdout.count("already done") == 11
    assert verify(out)["files"] == manifest["files"]



def test_verify_takes_a_steve1_model_only_when_the_manifest_lists_it(tmp_path, monkeypatch):
    """A release may carry its STEVE-1 policy's own architecture (`steve1.model`, `steve1_policy=`): listed, it is
    what the release's STEVE-1 weights load with; present but unlisted, the release is refused."""
    import shutil

    from steve1_ray.models.formats import write_model_file
    from steve1_ray.models.loading import RELEASE_STEVE1_MODEL, released_policy_model
    from steve1_ray.models.policy import PolicyConfig
    from steve1_ray.release import file_entries, released_world, verify

    root = tmp_path / "rw"
    shutil.copytree(released_world(), root)
    # the committed release lists its steve1.model (since session 29); start from one without, as before
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["files"][RELEASE_STEVE1_MODEL]
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / RELEASE_STEVE1_MODEL).unlink()
    assert released_policy_model(root) == "foundation.model"
    write_model_file(PolicyConfig.preset("wide", embed_dim=128), root / RELEASE_STEVE1_MODEL)
    with pytest.raises(ValueError, match="steve1.model: not listed"):
        verify(root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"].update(file_entries(root, [RELEASE_STEVE1_MODEL]))
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert RELEASE_STEVE1_MODEL in verify(root)["files"]
    assert released_policy_model(root) == RELEASE_STEVE1_MODEL
    assert released_policy_model(root, "foundation.weights") == "foundation.model"
    # `released` as a policy: STEVE-1's weights with steve1.model, the release's foundation weights with theirs
    from steve1_ray.models import loading

    monkeypatch.setattr(loading, "RELEASED_DIR", tmp_path)
    root.rename(tmp_path / "world")
    root = tmp_path / "world"
    assert loading.policy_files("released") == (str(root / "steve1.model"), str(root / "steve1.weights"))
    assert loading.policy_files("released", root / "foundation.weights")[0] == str(root / "foundation.model")
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "steve1.weights").write_bytes((root / "steve1.weights").read_bytes())  # a fine-tune of it
    assert loading.policy_files("released", tmp_path / "ft" / "steve1.weights")[0] == str(root / "steve1.model")
    (root / RELEASE_STEVE1_MODEL).write_bytes(b"changed")
    with pytest.raises(ValueError, match="steve1.model"):
        verify(root)


@pytest.mark.slow
def test_release_world_tiny_default_runs_the_text_tower_after_the_policies(tmp_path):
    """The committed release's path (no whitening): the text-tower stage comes after the policy stages (they keep
    their positions in older work folders) and the prior is trained on its text tower, which is what ships."""
    import yaml

    out, work = tmp_path / "release", tmp_path / "work"
    proc = _steve1(["release-world", "tiny=true", f"out={out}", f"work={work}"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    order = re.findall(r"^\[\d+\] (.+?)  \(t\+", proc.stdout, re.M)
    names = [n.split(" (")[0] for n in order]
    steve1, text, prior = (next(i for i, n in enumerate(names) if n.startswith(p))
                           for p in ("train STEVE-1", "train the embedder's text tower", "train the prior"))
    assert steve1 < text < prior == len(names) - 1, names
    # the command pinned the AVX2 kernels (the committed release's) before its stages, wherever the CPU has them
    from steve1_ray.numerics import has_isa

    if has_isa("avx2"):
        assert json.loads((out / "manifest.json").read_text())["cpu_capability"] == "AVX2"
    text, prior = work / "text_tower_anchor5", work / "prior_text_anchor5"  # the default text_anchor=5
    assert yaml.safe_load((prior / "prior.yaml").read_text())["mineclip_path"] == str(text / "mineclip.pth")
    assert (out / "mineclip.pth").read_bytes() == (text / "mineclip.pth").read_bytes()
    assert json.loads((out / "manifest.json").read_text())["config"]["text_anchor"] == 5
    assert "heldout/five/to_prototype" in json.loads((text / "metrics.json").read_text())["final"]
    # resumed with text_anchor=0 (the release before session 44): only the text tower and the prior run again, into
    # folders of their own, and the video tower (every goal the policies were trained on) is the same
    import torch

    from steve1_ray.models.mineclip import load_mineclip
    from steve1_ray.train.text_tower import video_state

    first = video_state(load_mineclip(out / "mineclip.pth"))
    proc = _steve1(["release-world", "tiny=true", f"out={out}", f"work={work}", "text_anchor=0"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    ran = [n.split(" (")[0] for n in re.findall(r"^\[\d+\] (.+?)  \(t\+", proc.stdout, re.M)]
    assert len(ran) == 2 and ran[0].startswith("train the embedder's text tower") and ran[1].startswith("train the prior"), ran
    assert (out / "mineclip.pth").read_bytes() == (work / "text_tower" / "mineclip.pth").read_bytes()
    assert (out / "prior.pt").read_bytes() == (work / "prior_text" / "prior.pt").read_bytes()
    again = video_state(load_mineclip(out / "mineclip.pth"))
    assert all(torch.equal(first[k], again[k]) for k in first)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["text_anchor"] == 0 and "heldout/five/to_prototype" not in manifest["metrics"]["text_tower"]["final"]


def test_release_out_refuses_a_folder_that_is_not_a_release(tmp_path):
    """`out=.` must never delete a working tree: only a release folder (or an empty or new one) is replaced."""
    from steve1_ray.config import ConfigError
    from steve1_ray.release import _check_out

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("precious")
    with pytest.raises(ConfigError, match="not a release folder"):
        _check_out(tmp_path / "src")
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "prior.pt").write_bytes(b"old")
    _check_out(tmp_path / "rel")  # a release folder may be replaced
    _check_out(tmp_path / "new")  # so may a new path
    assert (tmp_path / "src" / "main.py").read_text() == "precious"


def test_release_free_play_reaches_the_goal_stage_only(stage_plan, tmp_path):
    """`free_play=true`: the STEVE-1 goal stage meets the zero goal on the recording's free play only; the
    foundation stays unconditioned on every episode. Planned without running the jobs."""
    from conftest import PlanStop
    from steve1_ray.release import ReleaseConfig, run_release

    stage_plan.stop = lambda command, argv: "run_name=steve1_goals" in argv
    for free_play in (True, False):
        work = tmp_path / str(free_play)
        with pytest.raises(PlanStop):
            run_release(ReleaseConfig(out=str(tmp_path / "out"), work=str(work), free_play=free_play, cpu_isa="",
                                      appetite="needs"), [])
        record, train = stage_plan[0][1], {a.split("=")[1]: argv for c, argv in stage_plan if c == "train"
                                            for a in argv if a.startswith("run_name=")}
        assert "appetite=needs" in record and set(train) == {"foundation", "steve1_goals"}
        assert not [a for a in train["foundation"] if a.startswith("free_play=")]
        assert [a for a in train["steve1_goals"] if a.startswith("free_play=")] == (
            [f"free_play={work / 'world'}"] if free_play else [])
        stage_plan.clear()


def test_a_work_folder_resumes_only_with_the_goal_space_it_was_made_with(tmp_path, capsys):
    """Stages resume by position: a folder made without the whitening stages must not be resumed with them."""
    from steve1_ray.release import ReleaseConfig, main

    arch = ReleaseConfig().steve1_policy  # the default STEVE-1 architecture, as a folder made by default records it
    work = tmp_path / "work"
    work.mkdir()
    (work / "release_config.yaml").write_text("goal_whiten: false\n")
    assert main([f"work={work}", f"out={tmp_path / 'out'}", "goal_whiten=true", "tiny=true"]) == 2
    assert "made with goal_whiten=false" in capsys.readouterr().err
    assert (work / "release_config.yaml").read_text() == "goal_whiten: false\n" and not (tmp_path / "out").exists()
    # nor with another STEVE-1 architecture (its checkpoints are the foundation's)
    assert main([f"work={work}", f"out={tmp_path / 'out'}", "steve1_policy=wide", "tiny=true"]) == 2
    assert 'made with steve1_policy=""' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # a whitened folder, nor with a text-tower stage it did not have (the stage runs before the whitening there and
    # moves every later stage's position); an unwhitened one gains the stage after its policies, with its own prior
    # (embedder_epochs 1: tiny's)
    (work / "release_config.yaml").write_text(f"goal_whiten: true\nsteve1_policy: {arch}\nembedder_epochs: 1\n")
    assert main([f"work={work}", f"out={tmp_path / 'out'}", "goal_whiten=true", "tiny=true"]) == 2
    assert "made with text_epochs=0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # nor with another text anchor (the whitened embedder carries that text tower); without a text-tower stage
    # there is no anchor to compare (the check goes on to the next key, cpu_isa)
    (work / "release_config.yaml").write_text(f"goal_whiten: true\nsteve1_policy: {arch}\nembedder_epochs: 1\n"
                                              "text_epochs: 1\n")
    assert main([f"work={work}", f"out={tmp_path / 'out'}", "goal_whiten=true", "tiny=true"]) == 2
    assert "made with text_anchor=0.0" in capsys.readouterr().err
    (work / "release_config.yaml").write_text(f"goal_whiten: true\nsteve1_policy: {arch}\nembedder_epochs: 1\n"
                                              "text_epochs: 0\n")
    assert main([f"work={work}", f"out={tmp_path / 'out'}", "goal_whiten=true", "tiny=true", "text_epochs=0"]) == 2
    assert 'made with cpu_isa=""' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # nor with other demonstrators (the recording resumes episode by episode), other zero-goal episodes or another
    # embedder (a finished embedder stage is skipped; a folder from before session 38 trained 8 epochs)
    (work / "release_config.yaml").write_text(f"steve1_policy: {arch}\nappetite: eager\nembedder_epochs: 20\n")
    for arg, said in (("appetite=needs", 'appetite="eager"'), ("free_play=true", "free_play=false"),
                      ("stop_at_full=true", "stop_at_full=false")):
        assert main([f"work={work}", f"out={tmp_path / 'out'}", arg, "tiny=true"]) == 2
        assert f"made with {said}" in capsys.readouterr().err
    # tiny=true would force embedder_epochs=1: this one runs without it, at sizes that stay small should the check
    # ever let it through
    small = ["episodes=2", "max_steps=64", "foundation_frames=64", "goal_frames=64", "text_epochs=0", "prior_epochs=1"]
    assert main([f"work={work}", f"out={tmp_path / 'out'}", "embedder_epochs=8", *small]) == 2
    assert "made with embedder_epochs=20" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # nor with other CPU kernels (a folder from before session 41 ran the machine's own): its trained stages would
    # mix two roundings
    assert main([f"work={work}", f"out={tmp_path / 'out'}", "embedder_epochs=20", *small]) == 2
    assert 'made with cpu_isa=""' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_whitened_embedder_is_refused_as_a_training_start(tmp_path):
    import dataclasses

    from steve1_ray.models.mineclip import MineCLIP, MineCLIPConfig, save_mineclip
    from steve1_ray.train.embedder import EmbedderConfig, _initial_model

    white = save_mineclip(MineCLIP(MineCLIPConfig.preset("debug", goal_whiten=True)), tmp_path / "white.pth")
    plain = save_mineclip(MineCLIP(MineCLIPConfig.preset("debug")), tmp_path / "plain.pth")
    cfg = EmbedderConfig(init=str(plain))
    assert not _initial_model(cfg).cfg.goal_whiten
    with pytest.raises(ValueError, match="whitened goal space"):
        _initial_model(dataclasses.replace(cfg, init=str(white)))


def test_verify_refuses_a_manifest_that_lists_other_files(tmp_path):
    import shutil

    from steve1_ray.release import released_world, verify

    shutil.copytree(released_world(), tmp_path / "rw")
    m = json.loads((tmp_path / "rw" / "manifest.json").read_text())
    m["files"] = {"../../etc/passwd": {"sha256": "0", "bytes": 0}}
    (tmp_path / "rw" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="not the release's files"):
        verify(tmp_path / "rw")


def test_a_release_without_a_steve1_policy_fine_tunes_and_serves_its_foundation(tmp_path, monkeypatch):
    """steve1.weights is optional: without it (`goal_frames=0`, or a release from before session 17) `released` is
    the foundation and the quick start fine-tunes that at 1e-3 / goal_lr_scale 10; an unlisted steve1.weights is
    refused, never loaded unverified."""
    import shutil

    from steve1_ray.config import load_config
    from steve1_ray.models import loading
    from steve1_ray.quickstart import QuickstartConfig, finetune_plan
    from steve1_ray.release import released_world, verify

    committed = released_world()
    assert finetune_plan(QuickstartConfig(), committed) == ("steve1.weights", 3e-4, 1.0)
    old = tmp_path / "world"
    shutil.copytree(committed, old)
    m = json.loads((old / "manifest.json").read_text())
    del m["files"]["steve1.weights"]
    del m["files"]["steve1.model"]  # its architecture goes with it
    (old / "steve1.model").unlink()
    (old / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="steve1.weights: not listed"):
        verify(old)  # on disk but not in the manifest
    (old / "steve1.weights").unlink()
    verify(old)
    assert finetune_plan(QuickstartConfig(), old) == ("foundation.weights", 1e-3, 10.0)
    overridden = load_config(QuickstartConfig, [], ["finetune_lr=1e-4", "goal_lr_scale=3"])
    assert finetune_plan(overridden, old) == ("foundation.weights", 1e-4, 3.0)
    assert finetune_plan(overridden, committed) == ("steve1.weights", 1e-4, 3.0)
    monkeypatch.setattr(loading, "RELEASED_DIR", tmp_path)
    assert loading.policy_files("released") == (str(old / "foundation.model"), str(old / "foundation.weights"))
    monkeypatch.setattr(loading, "RELEASED_DIR", committed.parent)
    assert loading.policy_files("released")[1] == str(committed / "steve1.weights")
