"""Evaluation: planning and seeds, goal tables, config errors, rollouts in the crafter world, the whole job."""
from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest

from steve1_ray.config import ConfigError, load_config
from steve1_ray.evaluate.run import EvalConfig, derive_seed, main, plan_jobs, play_episodes
from steve1_ray.evaluate.targets import targets_for

DEBUG = "configs/eval/debug.yaml"


def test_targets_for_table_overrides_and_achievement_names():
    assert targets_for("collect wood") == ["collect_wood"]
    assert targets_for("  Chop   a TREE ") == ["collect_wood"]
    assert targets_for("drink water") == ["collect_drink"]
    assert targets_for("make_wood_pickaxe") == ["make_wood_pickaxe"]
    assert targets_for("place stone") == ["place_stone"]
    assert targets_for("go explore") == []
    assert targets_for("collect wood", {"collect wood": ["collect_wood", "place_table"]}) == \
        ["collect_wood", "place_table"]
    assert targets_for("go explore", {"Go Explore": []}) == []
    # The embedded world's training captions count too (steve1_ray.world.demonstrators.GOALS).
    assert targets_for("put down a workbench") == ["place_table"]
    assert targets_for("go to sleep") == ["wake_up"]
    assert targets_for("walk around and explore") == []


def test_plan_jobs_seeds_are_paired_and_repeatable():
    cfg = load_config(EvalConfig, [DEBUG], ["episodes=3"])
    jobs = plan_jobs(cfg)
    assert len(jobs) == (2 * 2 + 1) * 3
    # Every cell plays the same three worlds; agent seeds differ between cells and episodes.
    worlds = {(j["goal"], j["cond_scale"]): [x["world_seed"] for x in jobs
                                             if (x["goal"], x["cond_scale"]) == (j["goal"], j["cond_scale"])]
              for j in jobs}
    assert len({tuple(w) for w in worlds.values()}) == 1 and len(set(next(iter(worlds.values())))) == 3
    assert len({j["agent_seed"] for j in jobs}) == len(jobs)
    goal_seeds = {(j["goal"], j["episode"]): set() for j in jobs}
    for j in jobs:
        goal_seeds[(j["goal"], j["episode"])].add(j["goal_seed"])
    assert all(len(v) == 1 for v in goal_seeds.values()) and len(goal_seeds) == 3 * 3
    assert [j["agent_seed"] for j in plan_jobs(cfg)] == [j["agent_seed"] for j in jobs]
    other = plan_jobs(load_config(EvalConfig, [DEBUG], ["episodes=3", "seed=1"]))
    assert {j["world_seed"] for j in other}.isdisjoint({j["world_seed"] for j in jobs})
    assert [j["video"] for j in jobs[:3]] == [True, False, False]
    base = [j for j in jobs if j["kind"] == "unconditioned"]
    assert base and all(j["cond_scale"] is None and j["targets"] == [] for j in base)
    assert derive_seed(0, "a") == derive_seed(0, "a") != derive_seed(0, "b")


@pytest.mark.parametrize("override, message", [
    ("episodes=0", "episodes must be >= 1"),
    ("cond_scales=[-1]", "cond_scales must be finite numbers >= 0"),
    ("world.backend=minecraft", "world.backend='minecraft': choose one of"),
    ("prompts=[unconditioned]", "reserved for a baseline"),
    ("prompts=[foundation]", "reserved for a baseline"),
    ("paraphrases={collect wood: [place a table]}", "listed twice"),
    ("paraphrases={collect wood: [a, a]}", "listed twice"),
    ("paraphrases={collect wood: oops}", "must be a list of non-empty strings"),
    ("baseline_weights=x.weights", "baseline_weights is set but baseline_policy is not"),
    ("prompts=[a, a]", "listed twice"),
    ("video_height=33", "video_height must be an even number"),
    ("colour=red", "unknown key"),
])
def test_config_errors_name_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(EvalConfig, [DEBUG], [override])


def test_main_rejects_bad_input_with_exit_code(tmp_path, capsys):
    assert main(["--config", DEBUG, "episodes=zero"]) == 2
    assert "expected an integer" in capsys.readouterr().err
    assert main(["--config", DEBUG, f"policy={tmp_path}/nope.model", f"out_dir={tmp_path}/o"]) == 2
    assert "neither a preset" in capsys.readouterr().err


def _debug_jobs(cfg, n):
    from steve1_ray.agent import policy_embed_dim
    from steve1_ray.evaluate.run import embed_goals, load_eval_policy

    policy = load_eval_policy(cfg)
    jobs = plan_jobs(cfg)
    embed_goals(cfg, jobs, policy_embed_dim(policy))
    return policy, jobs[:n]


def test_play_episodes_in_crafter_world_is_repeatable():
    import io

    import av
    import cv2
    import torch

    from steve1_ray.world.config import make_env

    torch.set_num_threads(1)
    cfg = load_config(EvalConfig, [DEBUG], ["max_steps=6", "episodes=2", "video_height=64"])
    policy, jobs = _debug_jobs(cfg, 3)  # collect wood: scale 0 (x2), scale 6 (x1)
    envs = [make_env("crafter", frame_size=(128, 72), area=(32, 32)) for _ in range(3)]
    first = play_episodes(policy, envs, jobs, cfg.max_steps, video_height=64)
    again = play_episodes(policy, envs, jobs, cfg.max_steps, video_height=64)
    for (rec, mp4), (rec2, _) in zip(first, again):
        assert "error" not in rec and rec["steps"] == 6 and not rec["died"]
        assert rec["metrics"] == rec2["metrics"]
        assert rec["metrics"]["achievements/collect_wood"] >= 0
        assert {"travel/max_dist", "target/success", "inventory_max/wood"} <= set(rec["metrics"])
    assert first[1][1] is None  # only the first episode of a cell is filmed
    with av.open(io.BytesIO(first[0][1])) as c:  # H.264, the reset frame + one per step, prompt on top
        assert c.streams.video[0].codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 7 and frames[0].shape == (64, 114, 3)
    raw = np.asarray(envs[0].reset(seed=jobs[0]["world_seed"])["pov"])
    small = cv2.resize(raw, (114, 64), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(frames[0][40:].astype(int) - small[40:]).mean() < 12  # the picture below the banner
    assert np.abs(frames[0][:10].astype(int) - small[:10]).mean() > 20  # the darkened banner
    with pytest.raises(ValueError, match="only 3 worlds"):
        play_episodes(policy, envs, jobs + jobs[:1], 2)


def test_a_failing_world_only_ends_its_own_episode():
    from steve1_ray.world.config import make_env

    class Broken:
        def reset(self, seed=None):
            return {"pov": np.zeros((72, 128, 3), np.uint8)}

        def step(self, action):
            raise RuntimeError("the world crashed")

    cfg = load_config(EvalConfig, [DEBUG], ["max_steps=3"])
    policy, jobs = _debug_jobs(cfg, 2)
    out = play_episodes(policy, [Broken(), make_env("crafter", frame_size=(128, 72), area=(32, 32))], jobs, 3)
    assert "the world crashed" in out[0][0]["error"]
    assert "error" not in out[1][0] and out[1][0]["steps"] == 3


@pytest.mark.slow
def test_evaluate_job_end_to_end_writes_report(ray_cluster, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the bar is drawn for a terminal only
    out = tmp_path / "eval"
    args = ["--config", DEBUG, f"out_dir={out}", "episodes=2", "max_steps=8", "prompts=[collect wood]",
            "cond_scales=[0, 6]", "video_height=64", "world.frame_width=128", "world.frame_height=72", "world.area=[32, 32]",
            "progress=true"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "evaluate: 100%" in err and "48/48" in err and "episodes=6" in err  # the progress bar
    report = (out / "report.md").read_text()
    assert "| `collect wood` | collect_wood | 6 | 2 |" in report
    import re

    import torch  # the kernels the workers played with (conftest pins AVX2 where the CPU has it): named in the header

    assert re.search(rf"on \d+ workers, CPU kernels {torch.backends.cpu.get_cpu_capability()}\n", report)
    assert "| *no goal* | collect_wood | uncond. | 2 |" in report
    episodes = json.loads((out / "episodes.json").read_text())
    assert len(episodes) == 6 and all(e["steps"] == 8 for e in episodes)
    assert json.loads((out / "failed.json").read_text()) == []
    videos = sorted(p.name for p in (out / "videos").iterdir())
    assert videos == ["collect_wood_s0_ep0.mp4", "collect_wood_s6_ep0.mp4", "unconditioned_uncond_ep0.mp4"]
    assert (out / "plots" / "scale_collect_wood.png").stat().st_size > 5000
    assert (out / "config.yaml").exists()
    # The same seed replays the same evaluation, whichever worker plays which episode; this time through
    # the job script in its own process, joining the running cluster (as under `ray job submit`).
    import os
    import subprocess
    import sys

    again = tmp_path / "again"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address, "OMP_NUM_THREADS": "1"}
    # `python -m` (Ray must ship the module's classes by reference, not as __main__'s)
    proc = subprocess.run([sys.executable, "-m", "steve1_ray.evaluate.run", *args[:-1], f"out_dir={again}", "workers=1",
                           "streams_per_worker=2", "progress=false"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"report: {again / 'report.md'}" in proc.stdout
    episodes2 = json.loads((again / "episodes.json").read_text())
    assert [e["metrics"] for e in episodes2] == [e["metrics"] for e in episodes]


@pytest.mark.parametrize("goal, prompt", [("collect_wood", "chop a tree"), ("collect_drink", "drink water")])
def test_metrics_on_scripted_demonstrator_episodes(goal, prompt):
    """A scripted player pursues one goal; the metrics must match what the live world recorded."""
    from steve1_ray.evaluate.metrics import episode_metrics
    from steve1_ray.world.config import make_env
    from steve1_ray.world.demonstrators import Demonstrator

    env = make_env("crafter", frame_size=(64, 36), area=(32, 32))
    demo = Demonstrator(env, seed=1, noise=0.0, goals=(goal,))
    env.reset(seed=1)
    demo.reset()
    infos, positions, held, first = [], [], [], None
    for t in range(40):
        _, _, done, info = env.step(demo.act())
        infos.append(info)
        positions.append(np.array(env.player.pos, float))
        item = "wood" if goal == "collect_wood" else "drink"
        held.append(int(env.player.inventory[item]))
        if first is None and env.player.achievements[goal] > 0:
            first = t + 1
        if done:
            break
    segments = demo.finish()
    m = episode_metrics(infos, targets=targets_for(prompt))
    assert any(s.success for s in segments) and first is not None  # the script did reach its goal
    assert m["achievements/" + goal] == env.player.achievements[goal] > 0
    assert m["target/success"] == 1.0 and m["target/count"] == env.player.achievements[goal]
    assert m["target/first_step"] == first
    assert m[f"inventory_max/{item}"] == max(held)
    dist = max(np.linalg.norm(p - positions[0]) for p in positions)
    assert m["travel/max_dist"] == pytest.approx(dist) and dist > 0
    others = [k for k, v in m.items() if k.startswith("achievements/") and k != "achievements/" + goal and v]
    assert others == []  # a single-goal script unlocks nothing else in 40 steps


def test_embed_goals_prior_samples_and_visual_goals(tmp_path):
    import torch

    from steve1_ray.evaluate.run import embed_goals
    from steve1_ray.models.prior import TranslatorVAE

    torch.manual_seed(0)
    torch.save(TranslatorVAE(512, 64, 32).state_dict(), tmp_path / "prior.pt")
    np.save(tmp_path / "goal.npy", np.arange(512, dtype=np.float32)[None])
    frames = np.random.default_rng(0).integers(0, 255, (20, 72, 128, 3), dtype=np.uint8)
    np.savez(tmp_path / "clip.npz", frames=frames)
    cfg = load_config(EvalConfig, [DEBUG], [
        "episodes=2", "prompts=[collect wood]", f"prior={tmp_path / 'prior.pt'}",
        f"visual_goals={{stored: {tmp_path / 'goal.npy'}, clip: {tmp_path / 'clip.npz'}}}"])
    jobs = plan_jobs(cfg)
    embed_goals(cfg, jobs, 512)
    by = {(j["goal"], j["cond_scale"], j["episode"]): j["goal_embed"] for j in jobs}
    # One prior sample per episode (seeded): episodes differ, a re-run gives the same vectors, and every
    # scale gets the same samples (the sweep changes only the scale).
    assert not np.allclose(by[("collect wood", 0.0, 0)], by[("collect wood", 0.0, 1)])
    np.testing.assert_array_equal(by[("collect wood", 0.0, 1)], by[("collect wood", 6.0, 1)])
    again = plan_jobs(cfg)
    embed_goals(cfg, again, 512)
    assert all(np.array_equal(a["goal_embed"], b["goal_embed"]) for a, b in zip(jobs, again))
    assert np.array_equal(by[("stored", 6.0, 1)], np.arange(512, dtype=np.float32))
    assert by[("clip", 0.0, 0)].shape == (512,) and np.isfinite(by[("clip", 0.0, 0)]).all()
    assert not by[("unconditioned", None, 0)].any()
    with pytest.raises(ConfigError, match="policy expects 256"):
        embed_goals(cfg, plan_jobs(cfg), 256)
    bad = load_config(EvalConfig, [DEBUG], [f"visual_goals={{x: {tmp_path / 'missing.npy'}}}"])
    with pytest.raises(ConfigError, match="does not exist"):
        embed_goals(bad, plan_jobs(bad), 512)


def test_visual_goal_from_a_recording_frame(tmp_path):
    """`clip.mp4@k` embeds the 16 frames before frame k of a recording."""
    import av
    import torch

    from steve1_ray.evaluate.run import load_visual_goal
    from steve1_ray.models.loading import load_embedder

    path = tmp_path / "rec.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=20)
        s.width, s.height, s.pix_fmt = 128, 72, "yuv420p"
        for i in range(40):  # dark first half, bright second half
            img = np.full((72, 128, 3), 20 if i < 20 else 230, np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    emb = load_embedder("debug")
    early, late, end = (load_visual_goal(f"{path}@{k}", emb) for k in (18, 40, 40))
    assert early.shape == (512,) and not np.allclose(early, late)
    np.testing.assert_array_equal(late, end)
    whole = load_visual_goal(str(path), emb)
    np.testing.assert_allclose(whole, late, atol=1e-5)
    with torch.inference_mode():  # the same as encoding a bright clip directly (codec loss aside)
        direct = emb.encode_video(torch.full((1, 16, 160, 256, 3), 230, dtype=torch.uint8)).float().numpy()[0]
    assert np.corrcoef(direct, late)[0, 1] > 0.99
    with pytest.raises(ConfigError, match="at least 16 RGB frames"):
        load_visual_goal(f"{path}@10", emb)
    with pytest.raises(ConfigError, match="needs a clip"):
        load_visual_goal(f"{path}@x", emb)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("minerl") is not None, reason="needs a machine without MineRL")
def test_evaluate_job_reports_when_every_episode_fails(ray_cluster, tmp_path, capsys):
    """A world that cannot be built kills the workers; the job says why instead of hanging or crashing.
    (The world's options are checked when the config is built, so the world that fails here is MineRL, which
    is not installed on the test machines.)"""
    out = tmp_path / "eval"
    args = ["--config", DEBUG, f"out_dir={out}", "episodes=1", "max_steps=2", "prompts=[collect wood]",
            "cond_scales=[6]", "unconditioned=false", "workers=1", "world.backend=minerl", "progress=false"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "every episode failed" in err and "No module named 'minerl'" in err  # the cause, not Ray's preamble
    failed = json.loads((out / "failed.json").read_text())
    assert len(failed) == 1 and failed[0]["goal"] == "collect wood"


def test_report_only_rerenders_from_episodes_json(tmp_path):
    from test_evaluate_metrics import _episodes  # synthetic records (pytest puts tests/ on sys.path)

    from steve1_ray.evaluate.report import write_report

    episodes = _episodes()
    write_report(episodes, tmp_path)
    (tmp_path / "report.md").unlink()
    assert main([f"out_dir={tmp_path}", "report_only=true", "confidence=0.5"]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "Means with 50% confidence intervals" in text and "| `chop a tree` | collect_wood | 6 | 10 |" in text
    assert "CPU kernels" not in text  # records from before they were kept
    write_report([{**e, "cpu_kernels": "AVX2"} for e in episodes], tmp_path)
    assert main([f"out_dir={tmp_path}", "report_only=true"]) == 0
    assert "; played with CPU kernels AVX2\n" in (tmp_path / "report.md").read_text()
    assert main([f"out_dir={tmp_path / 'nothing'}", "report_only=true"]) == 2


def _weights_without_goal_layer(path, seed=5):
    """A debug policy's weights file without `net.mineclip_embed_linear` (a VPT-style foundation file)."""
    import torch

    from steve1_ray.models.formats import GOAL_KEYS
    from steve1_ray.models.policy import PolicyConfig, Steve1Policy

    torch.manual_seed(seed)
    policy = Steve1Policy(PolicyConfig.preset("debug"))
    sd = {k: v for k, v in policy.state_dict().items() if k not in GOAL_KEYS}
    torch.save(sd, path)
    return sd


def test_plan_jobs_other_phrasings_and_foundation_play_the_same_worlds():
    cfg = load_config(EvalConfig, [DEBUG], [
        "episodes=3", "prompts=[collect wood, place a table]", "baseline_policy=debug",
        "paraphrases={collect wood: [get me some logs], drink water: [sip from the lake]}"])
    jobs = plan_jobs(cfg)
    cells = list(dict.fromkeys((j["goal"], j["kind"], j["cond_scale"]) for j in jobs))
    assert cells == [("collect wood", "text", 0.0), ("collect wood", "text", 6.0),
                     ("get me some logs", "text", 0.0), ("get me some logs", "text", 6.0),  # beside its prompt
                     ("place a table", "text", 0.0), ("place a table", "text", 6.0),
                     ("unconditioned", "unconditioned", None), ("foundation", "foundation", None)]
    # "drink water" is not among the prompts: its phrasing is not played.
    assert not any(j["goal"] == "sip from the lake" for j in jobs)
    by_cell = {}
    for j in jobs:
        by_cell.setdefault((j["goal"], j["kind"]), []).append(j)
    phrasing = by_cell[("get me some logs", "text")]
    assert all(j["targets"] == ["collect_wood"] and j["paraphrase_of"] == "collect wood" for j in phrasing)
    assert all(j["paraphrase_of"] is None for j in by_cell[("collect wood", "text")])
    found, uncond = by_cell[("foundation", "foundation")], by_cell[("unconditioned", "unconditioned")]
    assert [j["world_seed"] for j in found] == [j["world_seed"] for j in uncond] \
        == [j["world_seed"] for j in phrasing[:3]]
    assert all(j["policy"] == "foundation" and j["targets"] == [] for j in found)
    assert {j["policy"] for j in jobs if j["kind"] != "foundation"} == {"policy"}
    # The phrasing is paired with its prompt: the same prior noise and action noise per (scale, episode), so its
    # cells differ from the prompt's only by the words; every other cell draws its own.
    prompt = by_cell[("collect wood", "text")]
    assert [(j["goal_seed"], j["agent_seed"]) for j in phrasing] == [(j["goal_seed"], j["agent_seed"]) for j in prompt]
    others = [j for j in jobs if j["goal"] != "get me some logs"]
    assert len({j["agent_seed"] for j in others}) == len(others)
    assert len({j["goal_seed"] for j in by_cell[("place a table", "text")]} & {j["goal_seed"] for j in prompt}) == 0
    assert "get me some logs" not in {j["goal"] for j in plan_jobs(load_config(EvalConfig, [DEBUG], ["episodes=1"]))}


def test_foundation_without_goal_layer_plays_with_it_zeroed(tmp_path):
    import torch

    from steve1_ray.agent import policy_embed_dim
    from steve1_ray.evaluate.run import embed_goals, load_baseline_policy, load_eval_policy
    from steve1_ray.world.config import make_env

    sd = _weights_without_goal_layer(tmp_path / "foundation.weights")
    cfg = load_config(EvalConfig, [DEBUG], [
        "episodes=1", "max_steps=3", "prompts=[collect wood]", "cond_scales=[6]", "videos_per_cell=0",
        "paraphrases={collect wood: [get me some logs]}", "baseline_policy=debug",
        f"baseline_weights={tmp_path / 'foundation.weights'}"])
    assert load_baseline_policy(load_config(EvalConfig, [DEBUG], [])) is None
    foundation = load_baseline_policy(cfg)
    assert foundation.load_report.missing_goal_layer
    goal_layer = foundation.net.mineclip_embed_linear
    assert not goal_layer.weight.any() and not goal_layer.bias.any()  # a zero goal adds nothing: VPT's own net
    got = foundation.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())
    # A file with the goal layer keeps it (a foundation trained with zero goals, say).
    torch.save(got | {"net.mineclip_embed_linear.bias": torch.ones_like(goal_layer.bias)}, tmp_path / "with.weights")
    kept = load_baseline_policy(load_config(EvalConfig, [DEBUG], [
        "baseline_policy=debug", f"baseline_weights={tmp_path / 'with.weights'}"]))
    assert kept.net.mineclip_embed_linear.bias.eq(1).all()

    policy = load_eval_policy(cfg)
    jobs = plan_jobs(cfg)
    embed_goals(cfg, jobs, policy_embed_dim(policy), policy_embed_dim(foundation))
    emb = {j["goal"]: j["goal_embed"] for j in jobs}
    assert not emb["foundation"].any() and not emb["unconditioned"].any()
    assert not np.allclose(emb["collect wood"], emb["get me some logs"])  # a phrasing is embedded as written
    envs = [make_env("crafter", frame_size=(128, 72), area=(32, 32))]
    (rec, _), = play_episodes(foundation, envs, [j for j in jobs if j["kind"] == "foundation"], 3)
    assert "error" not in rec and rec["steps"] == 3 and rec["kind"] == "foundation"


def test_main_names_a_missing_foundation(tmp_path, capsys):
    assert main(["--config", DEBUG, f"baseline_policy={tmp_path}/nope.model", f"out_dir={tmp_path}/o"]) == 2
    assert "neither a preset" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_job_with_foundation_and_phrasings_prints_progress(ray_cluster, tmp_path, capsys):
    _weights_without_goal_layer(tmp_path / "foundation.weights")
    out = tmp_path / "eval"
    args = ["--config", DEBUG, f"out_dir={out}", "episodes=2", "max_steps=6", "prompts=[collect wood]",
            "paraphrases={collect wood: [get me some logs]}", "cond_scales=[6]", "baseline_policy=debug",
            f"baseline_weights={tmp_path / 'foundation.weights'}", "video_height=64", "world.frame_width=128",
            "world.frame_height=72", "world.area=[32, 32]", "workers=1", "streams_per_worker=2"]
    assert main(args) == 0
    captured = capsys.readouterr()
    stdout = captured.out
    assert "evaluate:" not in captured.err  # stderr is no terminal here: no bar redrawn with '\r' into a log
    # Progress in the job's own output, not only the stderr bar or Ray's worker logs.
    assert ("[evaluate] 8 episodes: 1 prompts + 1 other phrasings x 1 scales (6), unconditioned, foundation; "
            "2 worlds each, at most 6 steps; 1 workers x 2 streams") in stdout
    # at least one line before the end, with an ETA (how far it got when polled depends on the machine's speed)
    assert re.search(r"^\[evaluate\] [0-7]/8 episodes done, \d+% of the steps, \S+ elapsed, ETA \S+$", stdout, re.M)
    assert "[evaluate] 8/8 episodes done in" in stdout
    episodes = json.loads((out / "episodes.json").read_text())
    by = {}
    for e in episodes:
        by.setdefault(e["kind"], []).append(e)
    assert [e["world_seed"] for e in by["foundation"]] == [e["world_seed"] for e in by["unconditioned"]]
    assert [e["paraphrase_of"] for e in episodes if e["goal"] == "get me some logs"] == ["collect wood"] * 2
    report = (out / "report.md").read_text()
    assert report.index("## Is each prompt followed?") < report.index("## Every goal and scale")
    assert "foundation policy `debug`" in report and "(no goal layer)" in report
    assert "- **collect wood**: " in report and "  - other phrasing **“get me some logs”**: " in report
    assert "| *foundation* | collect_wood | no goal | 2 |" in report
    assert "| `get me some logs` | collect_wood | 6 | 2 |" in report
    assert (out / "videos" / "foundation_uncond_ep0.mp4").is_file()


def test_crafter_config_asks_the_default_question():
    """configs/eval/crafter.yaml: the five prompts, >= 12 worlds per cell, scale 0 and guided scales, the release
    world, and other phrasings that are no caption (nor, where the phrase tables exist, a template phrase)."""
    import importlib

    from steve1_ray.world.demonstrators import GOALS

    cfg = load_config(EvalConfig, ["configs/eval/crafter.yaml"], [])
    assert cfg.prompts == ["chop a tree", "collect a sapling", "drink water", "eat a cow", "place a crafting table"]
    assert cfg.episodes >= 12 and 0.0 in cfg.cond_scales and any(s > 0 for s in cfg.cond_scales)
    assert cfg.unconditioned and cfg.max_steps == 300
    assert (cfg.world.backend, cfg.world.zombie_rate, cfg.world.tree_logs) == ("crafter", 0.2, 4)
    captions = {c for g in GOALS.values() for c in g.captions}
    assert set(cfg.paraphrases) == set(cfg.prompts) and set(cfg.prompts) <= captions
    phrasings = [q for _, q in cfg.phrasings()]
    assert len(phrasings) == 5 and not set(phrasings) & captions
    phrases = importlib.import_module("steve1_ray.world.phrases")
    templates = {p for ps in phrases.template_phrases().values() for p in ps}
    assert not set(phrasings) & templates
    targets = {q: targets_for(p) for p, q in cfg.phrasings()}
    assert targets == {j["goal"]: j["targets"] for j in plan_jobs(cfg) if j["paraphrase_of"]}
