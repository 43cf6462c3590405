"""The training loop under Ray Train: local mode (resume reproduces the uninterrupted run step for step) and
two gloo workers on embedded-world data (the loss falls, a killed worker is replaced and the run resumes from
its last checkpoint), the job script, early stopping."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from steve1_ray.train.config import load_train_config
from steve1_ray.train.synthetic import make_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return make_dataset(str(tmp_path_factory.mktemp("train_data") / "shards"), n_episodes=8, n_frames=48,
                        embed_dim=16, seed=0)


@pytest.fixture(scope="module")
def world_dataset(tmp_path_factory) -> str:
    """Embedded-world shards: 3 recorded crafter episodes (scripted demonstrator, contractor format), converted
    and embedded with the debug MineCLIP as the dataset job does per episode, written in the shard layout."""
    from steve1_ray.actions import env_to_policy
    from steve1_ray.data import load_contractor_episode
    from steve1_ray.data.embed import window_embeds
    from steve1_ray.models.loading import load_embedder
    from steve1_ray.train.synthetic import write_dataset
    from steve1_ray.world.recorder import record_episode

    root = tmp_path_factory.mktemp("world")
    embedder = load_embedder("debug", device="cpu")
    episodes, captions = {}, []
    for i in range(3):
        rec = record_episode(root / "rec", f"w{i}", seed=i, max_steps=96)
        captions += [{"episode": rec.name, "video": rec.video, "actions": rec.actions, **seg} for seg in rec.segments]
        ep = load_contractor_episode(root / f"rec/contractor/w{i}.mp4", root / f"rec/contractor/w{i}.jsonl",
                                     with_mineclip=True)
        embeds, valid = window_embeds(embedder, ep.frames_mineclip)
        buttons, camera = env_to_policy(ep.env_actions)
        episodes[f"w{i}"] = {"frames": ep.frames, "buttons": buttons, "camera": camera, "embeds": embeds,
                             "embed_valid": valid}
    (root / "rec" / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in captions))  # as `steve1 record`
    return write_dataset(str(root / "shards"), episodes)


def _cfg(dataset, storage, name, **kw):
    base = {"data": dataset, "storage_path": str(storage), "run_name": name, "T": 16, "trunc_t": 8,
            "batch_size": 2, "grad_accum": 1, "num_workers": 0, "lr": 2e-3, "warmup_frames": 32,
            "n_frames": 256, "log_every_steps": 1, "val_every_steps": 4, "checkpoint_every_steps": 4,
            "val_fraction": 0.25, "loader_threads": 1, "snapshot_every_frames": 128}
    base.update(kw)
    return load_train_config("debug", [f"{k}={v}" for k, v in base.items()])


def _losses(cfg) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for line in Path(cfg.resolved_tensorboard_dir(), "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train/loss" in rec and "val/loss" not in rec:
            out.setdefault(rec["step"], []).append(rec["train/loss"])
    return out


def _vals(cfg) -> list[float]:
    lines = Path(cfg.resolved_tensorboard_dir(), "metrics.jsonl").read_text().splitlines()
    return [json.loads(l)["val/loss"] for l in lines if "val/loss" in json.loads(l)]


def test_local_mode_resume_matches_uninterrupted_run(ray_cluster, dataset, tmp_path):
    from steve1_ray.models.formats import load_policy
    from steve1_ray.train.run import run_training

    full = _cfg(dataset, tmp_path, "full")
    result = run_training(full)
    assert result.error is None and result.metrics["frames"] == 256 and result.metrics["steps"] == 16
    vals = _vals(full)
    assert vals[-1] < vals[0] - 0.5, vals                       # the loss falls
    # self-describing checkpoint; exported weights load strictly into the original layout
    ckpt = Path(result.checkpoint.path)
    for rel in ("model/config.yaml", "model/policy.model", "model/steve1.weights", "train_config.yaml",
                "training_state/progress.json", "training_state/optimizer.pt", "training_state/rng.pt"):
        assert (ckpt / rel).exists(), rel
    progress = json.loads((ckpt / "training_state/progress.json").read_text())
    assert progress["frames"] == 256 and progress["steps"] == 16
    out = Path(full.resolved_out_weights())
    policy = load_policy(ckpt / "model/policy.model", out)
    assert policy.cfg.embed_dim == 16 and policy.load_report is not None
    assert out.with_name("steve1_best.weights").exists() and out.with_name("steve1_best.json").exists()
    assert out.with_name("steve1_snapshot_128.weights").exists()
    sd = torch.load(out, weights_only=True)
    assert all(not k.startswith(("module.", "policy.")) for k in sd)
    events = list(Path(full.resolved_tensorboard_dir()).glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set(EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"])
    assert {"train/loss", "val/loss", "train/lr", "train/grad_norm", "train/frames_per_s",
            "sys/rss_peak_gb"} <= tags

    # the same run, stopped after step 6 and resumed from its checkpoint by rerunning it
    part = _cfg(dataset, tmp_path, "resumed", stop_after_steps=6)
    first = run_training(part)
    assert first.metrics["steps"] == 6
    kernels = torch.backends.cpu.get_cpu_capability()  # the checkpoint says which kernels trained it
    mid = Path(first.checkpoint.path) / "training_state/progress.json"
    assert json.loads(mid.read_text())["cpu_kernels"] == kernels
    second = run_training(_cfg(dataset, tmp_path, "resumed"))
    assert second.metrics["frames"] == 256
    assert json.loads((Path(second.checkpoint.path) / "training_state/progress.json").read_text())["cpu_kernels"] \
        == kernels
    a, b = _losses(full), _losses(part)
    assert sorted(a) == sorted(b) == list(range(1, 17))
    for step in a:
        assert b[step][-1] == pytest.approx(a[step][0], rel=1e-5, abs=1e-6), step
    assert _vals(part)[-1] == pytest.approx(vals[-1], rel=1e-5)


def test_two_workers_loss_falls_and_a_killed_worker_is_recovered(ray_cluster, world_dataset, tmp_path):
    from steve1_ray.train.run import run_training

    cfg = _cfg(world_dataset, tmp_path, "ddp", num_workers=2, cpus_per_worker=0.5, batch_size=1, grad_accum=2,
               n_frames=384, checkpoint_every_steps=4, val_every_steps=6, fail_at_step=6, max_failures=2)
    assert cfg.frames_per_step == 8 * 1 * 2 * 2
    result = run_training(cfg)
    assert result.error is None
    assert result.metrics["frames"] == 384 and result.metrics["steps"] == 12
    assert (Path(cfg.run_dir()) / ".fail_injected_step6").exists()    # the worker really died
    progress = json.loads((Path(result.checkpoint.path) / "training_state/progress.json").read_text())
    assert progress["attempt"] >= 1                                     # ... and the run resumed
    losses = _losses(cfg)
    assert sorted(losses) == list(range(1, 13))
    redone = [s for s, v in losses.items() if len(v) > 1]
    assert redone and all(s > 4 for s in redone)                      # only work after the checkpoint
    for s in redone:
        assert losses[s][0] == pytest.approx(losses[s][1], rel=1e-5), s
    vals = _vals(cfg)
    assert vals[-1] < vals[0], vals
    assert os.path.exists(cfg.resolved_out_weights())


def test_train_job_script_refuses_bad_arguments_before_training(ray_cluster, dataset, tmp_path):
    """`jobs/train.py` exits 2 naming the fix (its successful run is `ray job submit`ted in test_multinode.py)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(repo / "jobs/train.py"), "--config", "debug", f"data={dataset}", "num_workers=1",
           "T=16", "trunc_t=8", "batch_size=2", "grad_accum=1", "n_frames=64", f"storage_path={tmp_path}",
           "run_name=smoke"]
    bad = subprocess.run(cmd + ["T=20"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "T=20 is not a multiple of trunc_t=8" in bad.stderr
    if not ray_cluster.cluster_resources().get("GPU"):
        gpu = subprocess.run(cmd + ["num_workers=1", "use_gpu=true"], capture_output=True, text=True, timeout=120,
                             env=env, cwd=tmp_path)
        assert gpu.returncode == 2 and "use_gpu=true" in gpu.stderr and "set use_gpu=false" in gpu.stderr
    assert not (tmp_path / "smoke" / "weights").exists()  # nothing trained


def test_relative_paths_are_made_absolute_for_the_workers(tmp_path, monkeypatch):
    """The workers start in another folder: a relative data= / in_weights= is resolved where the driver runs."""
    monkeypatch.chdir(tmp_path)
    cfg = load_train_config("debug", ["data=shards", "in_weights=w/steve1.weights", "storage_path=runs",
                                      "model=m/policy.model", "free_play=rec"]).with_absolute_paths()
    assert (cfg.data, cfg.in_weights, cfg.storage_path, cfg.model, cfg.free_play) == (
        str(tmp_path / "shards"), str(tmp_path / "w/steve1.weights"), str(tmp_path / "runs"),
        str(tmp_path / "m/policy.model"), str(tmp_path / "rec"))
    remote = load_train_config("debug", ["data=s3://b/shards", "storage_path=s3://b/runs"]).with_absolute_paths()
    assert (remote.data, remote.storage_path) == ("s3://b/shards", "s3://b/runs")


def test_early_stopping_with_patience(ray_cluster, dataset, tmp_path):
    from steve1_ray.train.run import run_training

    # lr 1e-30 leaves every fp32 weight unchanged, so val/loss never improves after the first validation
    cfg = _cfg(dataset, tmp_path, "patience", lr=1e-30, patience=2, val_every_steps=2, n_frames=512,
               snapshot_every_frames=0, val_max_sequences=2)
    result = run_training(cfg)
    assert result.error is None
    assert result.metrics["steps"] == 4 and result.metrics["frames"] == 64    # stopped long before 512 frames
    vals = _vals(cfg)
    assert len(set(vals)) == 1 and len(vals) >= 3


def test_goal_null_axes_keep_every_saved_goal_layer_blind_to_them(ray_cluster, dataset, tmp_path):
    """`goal_null_axes`: the exported weights and the checkpoint's weights read nothing of the goal along the axes
    after training (AdamW's steps leave that subspace; the loop projects back after each), and the rest of the goal
    layer still learned. A file that is no (k, embed_dim) array stops the run before it trains."""
    import numpy as np

    from steve1_ray.models.formats import load_policy
    from steve1_ray.train.run import run_training

    u = np.linalg.qr(np.random.default_rng(0).normal(size=(16, 2)))[0].T.astype(np.float32)  # (2, 16)
    np.save(tmp_path / "axes.npy", u * 3)  # any basis of the span will do: the loop orthonormalises it
    cfg = _cfg(dataset, tmp_path, "nulled", goal_null_axes=tmp_path / "axes.npy", n_frames=128,
               snapshot_every_frames=0)
    result = run_training(cfg)
    assert result.error is None and result.metrics["frames"] == 128
    ckpt = Path(result.checkpoint.path)
    for weights in (Path(cfg.resolved_out_weights()), ckpt / "model/steve1.weights"):
        policy = load_policy(ckpt / "model/policy.model", weights)
        w = policy.net.mineclip_embed_linear.weight.detach().numpy()
        assert np.abs(w @ u.T).max() < 1e-5, weights
        assert np.abs(w).max() > 1e-3  # not simply zeroed
    np.save(tmp_path / "bad.npy", np.zeros((2, 15), np.float32))
    with pytest.raises(Exception, match="goal_null_axes"):  # local mode: the worker's error reaches the caller
        run_training(_cfg(dataset, tmp_path, "bad_axes", goal_null_axes=tmp_path / "bad.npy", n_frames=32))


def test_prior_pairs_from_the_embedded_world(world_dataset, tmp_path):
    import numpy as np

    from steve1_ray.models.loading import load_embedder
    from steve1_ray.models.prior import load_prior
    from steve1_ray.train.prior import PriorConfig, train_prior, world_pairs

    world = Path(world_dataset).parent / "rec"
    cfg = PriorConfig(world=str(world), data=world_dataset, mineclip_preset="debug", clips_per_caption=2,
                      hidden_dim=32, latent_dim=8, epochs=2, n_val=4, out=str(tmp_path / "prior.pt"))
    text, visual, texts = world_pairs(cfg)
    captions = [json.loads(l) for l in (world / "captions.jsonl").read_text().splitlines()]
    assert len(text) == len(visual) == len(texts) and 0 < len(text) <= 2 * len(captions)
    assert set(texts) <= {c["text"] for c in captions}
    # the text side is the embedder's text tower; the visual side is a stored clip embedding of that episode
    want = load_embedder("debug", device="cpu").encode_text([texts[0]]).detach().numpy()[0]
    assert np.allclose(text[0], want, atol=1e-5)
    from steve1_ray.data import shards

    stored = np.concatenate([shards.load_episode(world_dataset, e, columns=["embeds"])["embeds"]
                             for e in shards.list_episodes(world_dataset)])
    assert visual.shape[1] == 512
    assert all(np.any(np.all(stored == v, axis=1)) for v in visual)
    summary = train_prior(cfg, text, visual, log=lambda *_: None)
    assert load_prior(summary["out"]).input_dim == 512


def test_non_finite_numbers_are_skipped_then_stop_the_run(ray_cluster, tmp_path):
    """Goal embeddings with NaN in half the episodes: those steps are skipped and counted, the run finishes
    with finite weights. All NaN: the run stops after max_nonfinite_steps with an error that names the fix,
    and writes no weights."""
    import numpy as np

    from steve1_ray.models.formats import load_policy
    from steve1_ray.train.run import run_training
    from steve1_ray.train.synthetic import synthetic_episode, write_dataset

    rng = np.random.default_rng(0)
    episodes = {f"e{i}": synthetic_episode(48, 16, rng) for i in range(8)}
    for i in (0, 2, 4, 6):
        episodes[f"e{i}"]["embeds"][:] = np.nan
    mixed = write_dataset(str(tmp_path / "mixed"), episodes)
    cfg = _cfg(mixed, tmp_path, "mixed", p_uncond=0.0, max_nonfinite_steps=100, max_failures=0,
               val_every_steps=100, snapshot_every_frames=0)
    result = run_training(cfg)
    assert result.error is None and result.metrics["steps"] == 16
    assert 0 < result.metrics["skipped_steps"] < 16, result.metrics
    policy = load_policy("debug", cfg.resolved_out_weights(), embed_dim=16)
    assert all(torch.isfinite(p).all() for p in policy.state_dict().values())

    for i in range(8):
        episodes[f"e{i}"]["embeds"][:] = np.nan
    bad = write_dataset(str(tmp_path / "bad"), episodes)
    cfg = _cfg(bad, tmp_path, "bad", p_uncond=0.0, max_nonfinite_steps=3, max_failures=0, val_every_steps=100,
               snapshot_every_frames=0)
    from steve1_ray.train.checkpoint import NonFiniteError

    try:
        error = run_training(cfg).error  # with Ray Train workers: the result's error
    except NonFiniteError as exc:  # local mode: raised here
        error = exc
    assert error is not None and "3 optimizer steps in a row" in str(error), error
    assert "max_nonfinite_steps" in str(error)
    assert not Path(cfg.resolved_out_weights()).exists()


def _text_tower_inputs(world_dataset, tmp_path) -> tuple[Path, Path, dict]:
    """The fixture's recording, a copy of its shards whose manifest names the embedder they were embedded with
    (written to tmp_path/mine.pth), and that manifest."""
    import shutil

    from steve1_ray.models.loading import load_embedder
    from steve1_ray.models.mineclip import save_mineclip

    world = Path(world_dataset).parent / "rec"
    data = tmp_path / "shards"
    shutil.copytree(world_dataset, data)
    save_mineclip(load_embedder("debug", device="cpu"), tmp_path / "mine.pth")  # what the fixture embedded with
    manifest = json.loads((data / "manifest.json").read_text())
    manifest.setdefault("options", {})["mineclip_path"] = str(tmp_path / "mine.pth")
    (data / "manifest.json").write_text(json.dumps(manifest))
    return world, data, manifest


def test_text_tower_learns_alone_and_leaves_every_goal_as_it_was(world_dataset, tmp_path):
    """`steve1 train-text-tower`: only the text tower moves (the video tower, so every goal embedding, is
    bit-identical), the prior's caption pairs are its data, and a dataset embedded with another video tower is
    refused."""
    import torch

    from steve1_ray.config import ConfigError
    from steve1_ray.models.loading import load_embedder
    from steve1_ray.models.mineclip import load_mineclip, save_mineclip
    from steve1_ray.train.text_tower import TextTowerConfig, run, video_state

    world, data, manifest = _text_tower_inputs(world_dataset, tmp_path)
    cfg = TextTowerConfig(embedder=str(tmp_path / "mine.pth"), world=str(world), data=str(data),
                          out=str(tmp_path / "out"), epochs=2, batch_size=8, clips_per_caption=2)
    info = run(cfg, log=lambda *_: None)
    before, after = load_mineclip(tmp_path / "mine.pth"), load_mineclip(tmp_path / "out" / "mineclip.pth")
    a, b = video_state(before), video_state(after)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    text = [k for k in before.state_dict() if k.startswith("clip_model.text_model.")]
    assert any(not torch.equal(before.state_dict()[k], after.state_dict()[k]) for k in text)
    assert [h["epoch"] for h in info["history"]] == [0, 1, 2] and info["pairs"] > 0
    assert {"heldout/to_caption", "heldout/five/to_goal", "caption/to_caption"} <= set(info["final"])
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["final"] == info["final"]
    # a dataset whose goals came from another video tower: refused, nothing written
    save_mineclip(load_embedder("debug", device="cpu", seed=1), tmp_path / "other.pth")
    manifest["options"]["mineclip_path"] = str(tmp_path / "other.pth")
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="video tower differs"):
        run(TextTowerConfig(**{**cfg.__dict__, "out": str(tmp_path / "out2")}), log=lambda *_: None)
    assert not (tmp_path / "out2").exists()


def test_text_tower_anchor_pulls_each_wording_toward_its_goals_caption_prototype(world_dataset, tmp_path):
    """`anchor`: what the prior reads (the raw text embedding) moves toward each goal's caption prototype, held-out
    phrasings included (they are never trained on); without it the metrics of the committed release stay as they
    were (no `to_prototype` keys)."""
    from steve1_ray.train.text_tower import TextTowerConfig, run

    world, data, _ = _text_tower_inputs(world_dataset, tmp_path)
    common = dict(embedder=str(tmp_path / "mine.pth"), world=str(world), data=str(data), epochs=3, batch_size=8,
                  clips_per_caption=2, lr=1e-3)
    plain = run(TextTowerConfig(**common, out=str(tmp_path / "plain")), log=lambda *_: None)
    pulled = run(TextTowerConfig(**common, out=str(tmp_path / "pulled"), anchor=20.0), log=lambda *_: None)
    assert not any("to_prototype" in k for k in plain["final"]) and "train/anchor" not in plain["final"]
    start, end = pulled["history"][0], pulled["final"]
    assert end["heldout/five/to_prototype"] < 0.8 * start["heldout/five/to_prototype"]
    assert end["caption/five/to_prototype"] < 0.8 * start["caption/five/to_prototype"]
    assert end["train/anchor"] < pulled["history"][1]["train/anchor"]
    # the control: the same training without the pull does not get there
    from steve1_ray.models.mineclip import load_mineclip
    from steve1_ray.train.text_tower import caption_prototypes, prototype_distance

    protos = caption_prototypes(load_mineclip(tmp_path / "mine.pth").eval())
    alone = prototype_distance(load_mineclip(tmp_path / "plain" / "mineclip.pth").eval(), protos)
    assert start["heldout/five/to_prototype"] == prototype_distance(load_mineclip(tmp_path / "mine.pth").eval(), protos)[
        "heldout/five/to_prototype"]
    assert alone["heldout/five/to_prototype"] > 0.8 * start["heldout/five/to_prototype"]


def test_filler_words_are_words_the_captions_and_templates_never_use():
    import numpy as np

    from steve1_ray.train.text_tower import add_filler, filler_words
    from steve1_ray.world.phrases import captions, template_phrases

    words = filler_words()
    used = {w for ts in list(captions().values()) + list(template_phrases().values()) for t in ts for w in t.split()}
    assert len(words) > 10000 and not set(words) & used and {"sapling", "cow", "tree", "please"} & set(words) == set()
    texts = ["chop a tree"] * 200
    out = add_filler(texts, 0.5, words, np.random.default_rng(0))
    extra = [len(o.split()) - 3 for o in out]
    assert set(extra) <= {0, 1, 2, 3} and 60 < sum(e > 0 for e in extra) < 140
    assert all([w for w in o.split() if w not in words] == ["chop", "a", "tree"] for o in out)
    assert add_filler(texts, 0.0, words, np.random.default_rng(0)) == texts


def test_text_tower_config_refuses_missing_and_out_of_range_values():
    from steve1_ray.config import ConfigError, load_config
    from steve1_ray.train.text_tower import TextTowerConfig

    ok = ["embedder=e.pth", "world=w", "data=d"]
    with pytest.raises(ConfigError, match="embedder= is required"):
        load_config(TextTowerConfig, [], ["world=w", "data=d"])
    for bad, msg in (("filler=2", "shares in"), ("paraphrases=-0.1", "shares in"), ("batch_size=1", "batch_size=1"),
                     ("epochs=0", "epochs=0"), ("lr=0", "lr=0"), ("clips_per_caption=0", "clips_per_caption=0"),
                     ("anchor=-1", "anchor=-1"), ("anchor=inf", "anchor=inf")):
        with pytest.raises(ConfigError, match=msg):
            load_config(TextTowerConfig, [], ok + [bad])
    assert load_config(TextTowerConfig, [], ok).filler == 0.5
