"""The Ray Data job end to end: good episodes written, every bad-input class quarantined, resumable."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from steve1_ray.data import load_contractor_episode, shards
from steve1_ray.data.pipeline import DataConfig, convert_episode, generate_dataset
from steve1_ray.data.sampling import create_sampling, read_sampling
from steve1_ray.data.sources import EpisodeTask
from steve1_ray.data.synthetic import write_episode


def _recordings(root):
    """Two good episodes and one of each bad-input class."""
    write_episode(root / "good_a", 60, seed=1)
    write_episode(root / "good_b", 45, seed=2)
    bad = write_episode(root / "corrupt", 30, seed=3)
    (bad / "video.mp4").write_bytes(os.urandom(5000))
    bad = write_episode(root / "truncated", 30, seed=4)
    (bad / "video.mp4").write_bytes((bad / "video.mp4").read_bytes()[:4000])
    bad = write_episode(root / "malformed", 30, seed=5)
    (bad / "actions.jsonl").write_text((bad / "actions.jsonl").read_text()[:-40] + "\n{oops\n")
    write_episode(root / "short_jsonl", 45, seed=6, n_video_frames=60)  # segments get written, then the mismatch
    write_episode(root / "wrong_res", 30, seed=7, width=320, height=180)
    write_episode(root / "too_short", 20, seed=8)


def _cfg(root, out, **kw):
    return DataConfig(output=str(out), sources=[f"local:{root}"], min_frames=24, segment_len=16,
                      frame_codec="png", embedder="mineclip", mineclip_preset="debug", frame_batch=16,
                      progress=False, **kw)


@pytest.mark.slow
def test_pipeline_end_to_end(ray_cluster, tmp_path):
    rec, out = tmp_path / "rec", tmp_path / "ds"
    _recordings(rec)
    summary = generate_dataset(_cfg(rec, out))
    assert summary["episodes_written"] == 2 and summary["episodes_quarantined"] == 6
    reasons = {q: json.loads((out / "quarantine" / f"{q}.json").read_text())["reason"]
               for q in summary["quarantined_ids"]}
    # PyAV words it either way, depending on how far the garbage header parses
    assert "cannot open video" in reasons["corrupt"] or "has no video stream" in reasons["corrupt"]
    assert "truncated" in reasons["truncated"]
    assert "not valid JSON" in reasons["malformed"]
    assert "60 video frames but 45 action lines" in reasons["short_jsonl"]
    assert "is 320x180, expected 640x360" in reasons["wrong_res"]
    assert "too short" in reasons["too_short"]
    # quarantined episodes leave no shard behind (short_jsonl had segments written before failing)
    assert sorted({p.name.rsplit("-", 1)[0] for p in (out / "shards").iterdir()}) == ["good_a", "good_b"]
    assert not list((out / "_tmp").iterdir())

    manifest = shards.read_manifest(out)
    assert manifest["counts"]["episodes"] == 2 and manifest["counts"]["quarantined"] == 6
    assert manifest["schema"]["embed_dim"] == 512 and manifest["options"]["segment_len"] == 16
    for ep in manifest["episodes"]:
        for rel, sha in ep["checksums"].items():
            assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha

    # contents equal the one-episode conversion, embeddings equal a direct computation
    from steve1_ray.actions import env_to_policy
    from steve1_ray.data.embed import window_embeds
    from steve1_ray.models.loading import load_embedder

    ref = load_contractor_episode(rec / "good_a" / "video.mp4", rec / "good_a" / "actions.jsonl")
    got = shards.load_episode(out, "good_a")
    assert got["frames"].shape == ref.frames.shape and np.array_equal(got["frames"], ref.frames)
    buttons, camera = env_to_policy(ref.env_actions)
    assert np.array_equal(got["buttons"], buttons) and np.array_equal(got["camera"], camera)
    np.testing.assert_allclose(got["env_camera"], ref.env_actions["camera"], rtol=1e-6)
    embeds, valid = window_embeds(load_embedder("debug", device="cpu"), ref.frames_mineclip)
    assert np.array_equal(got["embed_valid"], valid) and got["embed_valid"][:15].sum() == 0
    assert np.abs(got["embeds"] - embeds).max() < 1e-4
    assert len(shards.list_episodes(out)["good_a"]["segments"]) == -(-len(ref) // 16)

    # rerun: nothing to do, nothing rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    again = generate_dataset(_cfg(rec, out))
    assert again["episodes_written"] == 0 and again["episodes_quarantined"] == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == mtimes
    # an unfinished episode (no index entry) is redone; quarantined ones only with retry_quarantined
    (out / "index" / "good_b.json").unlink()
    again = generate_dataset(_cfg(rec, out))
    assert again["episodes_written"] == 1 and shards.read_manifest(out)["counts"]["episodes"] == 2

    # the sampling job reads the result
    info = create_sampling([str(out)], "t", tmp_path / "samplings", val_frames=1, train_frames=1, min_frames=1)
    assert info["train_frames"] > 0 and len(read_sampling(tmp_path / "samplings", "t", "val")) == 1


@pytest.mark.slow
def test_a_crashing_episode_is_quarantined_and_the_rest_ingested(ray_cluster, tmp_path):
    """An episode whose convert task kills its process (a decoder segfault, an OOM kill: no error row) is tried
    twice, then quarantined with its reason; the other episodes are ingested in the same run (before: Ray retried
    the dead task forever, or the job died on every rerun)."""
    rec, out = tmp_path / "rec", tmp_path / "ds"
    write_episode(rec / "good_a", 40, seed=1)
    write_episode(rec / "crashy", 40, seed=2)
    write_episode(rec / "good_b", 40, seed=3)
    summary = generate_dataset(_cfg(rec, out, crash_episodes=["crashy"]))
    assert summary["episodes_written"] == 2 and summary["quarantined_ids"] == ["crashy"], summary
    reason = json.loads((out / "quarantine" / "crashy.json").read_text())["reason"]
    assert "died 2 times" in reason and "segfault" in reason
    assert not list((out / "attempts").glob("*.json"))  # no marker left behind
    # a rerun skips it; retry_quarantined=true ingests it once the cause is gone
    assert generate_dataset(_cfg(rec, out))["episodes_written"] == 0
    again = generate_dataset(_cfg(rec, out, retry_quarantined=True))
    assert again["episodes_written"] == 1 and shards.read_manifest(out)["counts"]["episodes"] == 3


def test_convert_never_raises(tmp_path):
    """One bad file gives one error row, whatever the error."""
    task = EpisodeTask("x", str(tmp_path / "none.mp4"), str(tmp_path / "none.jsonl"), "local:test").to_dict()
    rows = list(convert_episode(task, DataConfig(output=str(tmp_path), sources=["x"], min_frames=1)))
    assert len(rows) == 1 and rows[0]["error"].startswith(str(tmp_path / "none.jsonl"))


def test_config_rejects_bad_values():
    from steve1_ray.config import ConfigError

    with pytest.raises(ConfigError, match="frame_codec='gif'"):
        DataConfig(frame_codec="gif")
    with pytest.raises(ConfigError, match="segment_len=4"):
        DataConfig(segment_len=4)
    with pytest.raises(ConfigError, match="max_convert_attempts=0"):
        DataConfig(max_convert_attempts=0)


@pytest.mark.slow
def test_job_script_connects_to_the_running_cluster(ray_cluster, tmp_path):
    """Plain `python jobs/generate_dataset.py` with RAY_ADDRESS set; output as a URI (the cloud code path)."""
    write_episode(tmp_path / "rec" / "ep", 40, seed=9)
    env = dict(os.environ, RAY_ADDRESS=ray_cluster.get_runtime_context().gcs_address, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "generate_dataset.py"), f"output=file://{tmp_path / 'ds'}",
                          f"sources=[local:{tmp_path / 'rec'}]", "min_frames=16", "embedder=none", "progress=false"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"episodes_written": 1' in out.stdout
    assert shards.read_manifest(tmp_path / "ds")["counts"]["episodes"] == 1


@pytest.mark.slow
def test_whiten_embedder_fits_the_dataset_it_embedded_and_the_dataset_job_then_writes_whitened_goals(
        ray_cluster, tmp_path, capsys):
    import torch

    from steve1_ray.models.mineclip import MineCLIP, MineCLIPConfig, load_mineclip, save_mineclip
    from steve1_ray.train.data import ShardEpisodes
    from steve1_ray.train.whiten import main as whiten_main

    rec = tmp_path / "rec"
    write_episode(rec / "good_a", 60, seed=1)
    write_episode(rec / "good_b", 45, seed=2)
    torch.manual_seed(0)
    raw_file = save_mineclip(MineCLIP(MineCLIPConfig.preset("debug", embed_dim=32)), tmp_path / "raw.pth")

    def embed(model_file, out):
        generate_dataset(DataConfig(output=str(out), sources=[f"local:{rec}"], min_frames=24, segment_len=16,
                                    frame_codec="png", embedder="mineclip", mineclip_path=str(model_file),
                                    frame_batch=16, progress=False))
        src = ShardEpisodes(str(out))
        return {e: src.embeds(e) for e in sorted(src.episode_ids())}

    raw = embed(raw_file, tmp_path / "ds_raw")
    white_file = tmp_path / "white" / "mineclip.pth"
    assert whiten_main([f"embedder={raw_file}", f"data={tmp_path / 'ds_raw'}", f"out={white_file}"]) == 0
    white = load_mineclip(white_file)
    x = np.concatenate([e[v] for e, v in raw.values()])
    assert white.cfg.goal_whiten and json.loads(white_file.with_suffix(".json").read_text())["frames"] == len(x) > 32
    y = (x - white.goal_mean.numpy()) @ white.goal_matrix.numpy().T
    assert np.allclose(y.mean(0), 0, atol=1e-3) and np.linalg.eigvalsh(np.cov(y.T)).max() < 1.01
    # the dataset job with the whitened embedder writes the whitened goals of the same windows
    again = embed(white_file, tmp_path / "ds_white")
    for eid, (e, v) in raw.items():
        want = (e[v] - white.goal_mean.numpy()) @ white.goal_matrix.numpy().T
        np.testing.assert_allclose(again[eid][0][v], want, atol=2e-3, rtol=1e-3)
    # refused: whitening twice; a dataset of another width; missing arguments
    assert whiten_main([f"embedder={white_file}", f"data={tmp_path / 'ds_raw'}", f"out={tmp_path / 'w2.pth'}"]) == 2
    assert "whitened already" in capsys.readouterr().err
    torch.manual_seed(0)
    other = save_mineclip(MineCLIP(MineCLIPConfig.preset("debug", embed_dim=16)), tmp_path / "other.pth")
    assert whiten_main([f"embedder={other}", f"data={tmp_path / 'ds_raw'}", f"out={tmp_path / 'w3.pth'}"]) == 2
    assert "not a dataset this embedder made" in capsys.readouterr().err
    assert whiten_main([f"embedder={raw_file}"]) == 2 and "give embedder=" in capsys.readouterr().err
    assert not (tmp_path / "w2.pth").exists() and not (tmp_path / "w3.pth").exists()


@pytest.mark.slow
def test_relative_paths_are_found_by_the_tasks_and_actors(ray_cluster, tmp_path, monkeypatch):
    """`steve1 dataset output=ds sources=[local:rec] mineclip_path=models/emb.pth` from a working folder: the
    convert tasks and embedding actors run in Ray's own folder (the cluster started before), so the driver makes
    every local path absolute (the embedder's path failed in the actors before). A missing embedder fails in the
    driver, with the path in the message."""
    import torch

    from steve1_ray.config import ConfigError
    from steve1_ray.models.mineclip import MineCLIP, MineCLIPConfig, save_mineclip

    write_episode(tmp_path / "rec" / "ep", 40, seed=9)
    torch.manual_seed(0)
    save_mineclip(MineCLIP(MineCLIPConfig.preset("debug", embed_dim=32)), tmp_path / "models" / "emb.pth")
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(output="ds", sources=["local:rec"], min_frames=16, segment_len=16, frame_codec="png",
                     embedder="mineclip", mineclip_path="models/emb.pth", frame_batch=16, progress=False)
    summary = generate_dataset(cfg)
    assert summary["episodes_written"] == 1, summary
    options = shards.read_manifest(tmp_path / "ds")["options"]
    assert options["mineclip_path"] == str((tmp_path / "models" / "emb.pth").resolve())
    assert options["sources"] == [f"local:{(tmp_path / 'rec').resolve()}"]
    with pytest.raises(ConfigError, match="mineclip_path='models/missing.pth': no such file"):
        generate_dataset(DataConfig(output="ds2", sources=["local:rec"], mineclip_path="models/missing.pth"))
    assert not (tmp_path / "ds2").exists()
