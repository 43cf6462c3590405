"""World embedder (steve1_ray.train.embedder): loss, clip cutting, learning, checkpoint layout, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from steve1_ray.config import ConfigError
from steve1_ray.train.embedder import (ClipSet, EmbedderConfig, contrastive_loss, encode_clip_batch, encode_clips,
                                       main, retrieval_metrics, segment_batches, split_by_episode, train_embedder)
from steve1_ray.models.mineclip import MineCLIPConfig, load_mineclip

H, W = 160, 256


def test_loss_is_clip_loss_when_labels_differ():
    torch.manual_seed(0)
    v, t = torch.randn(6, 8), torch.randn(6, 8)
    scale = torch.tensor(2.0)
    logits = scale.exp() * F.normalize(v, dim=-1) @ F.normalize(t, dim=-1).T
    target = torch.arange(6)
    clip = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    got = contrastive_loss(v, t, scale, [f"g{i}" for i in range(6)])
    assert torch.allclose(got, clip, atol=1e-6)
    # Same-goal pairs are positives: the targets of a row spread evenly over the clips of its goal.
    labels = ["a", "b", "a", "c", "b", "a"]
    soft = torch.tensor([[float(x == y) for y in labels] for x in labels])
    soft = soft / soft.sum(1, keepdim=True)
    want = (F.cross_entropy(logits, soft) + F.cross_entropy(logits.T, soft)) / 2
    assert torch.allclose(contrastive_loss(v, t, scale, labels), want, atol=1e-6)
    assert not torch.allclose(want, clip)


def _synthetic(n_goals=4, per_goal=12, episodes=6, seed=0) -> ClipSet:
    """Clips whose last 4 frames show a goal's marker (a coloured bar in the bottom row, like a new item in
    crafter's inventory) over noisy grass; captions are two paraphrases per goal. Frames are shared between
    clips (index into a small pool), as in real overlapping windows."""
    rng = np.random.default_rng(seed)
    n_bg = 24
    pool = [np.clip(rng.normal(90, 25, (H, W, 3)), 0, 255).astype(np.uint8) for _ in range(n_bg)]
    colours = [(230, 40, 40), (40, 40, 230), (240, 240, 40), (20, 20, 20)]
    for g in range(n_goals):
        for k in range(4):  # 4 variants of each goal's frame: marker at a varying place of the bottom row
            f = pool[rng.integers(n_bg)].copy()
            x = 32 * int(rng.integers(0, 4))
            f[128:160, x:x + 128] = colours[g]
            pool.append(f)
    index, texts, goals, eps = [], [], [], []
    for g in range(n_goals):
        for j in range(per_goal):
            bg = rng.integers(0, n_bg, 12)
            marked = n_bg + 4 * g + rng.integers(0, 4, 4)
            index.append(np.concatenate([bg, marked]))
            texts.append([f"collect item {g}", f"get the thing number {g}"][j % 2])
            goals.append(f"goal{g}")
            eps.append(f"ep{j % episodes}")
    m = len(texts)
    return ClipSet(np.stack(pool), np.asarray(index), texts, goals, eps, np.arange(m) // 3, np.ones(m, bool))


def test_clipset_batches_and_shared_frames():
    data = _synthetic()
    batches = segment_batches(data, 8, seed=0)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(data)))  # each clip once per epoch (no partial batch lost)
    for b in batches:  # whole segments
        assert set(np.flatnonzero(np.isin(data.segments, data.segments[b]))) == set(b.tolist())
    model = load_mineclip(None, MineCLIPConfig.preset("debug", patch_size=32), seed=0)
    idx = batches[0]
    with torch.no_grad():  # each distinct frame once == each clip on its own
        shared = encode_clip_batch(model, data, idx)
        direct = encode_clips(model, torch.from_numpy(data.clips(idx)))
    assert torch.allclose(shared, direct, atol=1e-4)
    train, val = split_by_episode(data, 0.34, seed=0)
    assert not set(train.episodes) & set(val.episodes) and len(train) + len(val) == len(data)
    first_val = next(i for i, e in enumerate(data.episodes) if e in set(val.episodes))
    np.testing.assert_array_equal(val.clips([0]), data.clips([first_val]))
    assert val.frames.shape[0] == len(np.unique(val.index))  # subset keeps only its own frames


def test_learns_synthetic_goals_above_chance():
    data = _synthetic()
    train, val = split_by_episode(data, 0.34, seed=0)
    cfg = EmbedderConfig(epochs=10, batch_size=12, lr=3e-3, warmup_steps=3, mineclip={"patch_size": 32, "crop": None,
                         "embed_dim": 64, "temporal_heads": 2, "temporal_dim_head": 32})
    before = retrieval_metrics(load_mineclip(None, cfg.model_config(), seed=0), val)
    model, info = train_embedder(cfg, train, val, log=lambda s: None)
    after = info["final"]
    # 16 held-out clips of 4 goals: chance is 0.25 for both metrics; ~60 steps reach 0.75 (8 s of CPU)
    assert after["val/text_to_clip_r@1_chance"] < 0.3 and after["val/clip_to_goal_chance"] == 0.25
    assert after["val/text_to_clip_r@1"] >= 0.6 and after["val/clip_to_goal_acc"] >= 0.6
    assert before["clip_to_goal_acc"] <= 0.5
    assert info["history"][-1]["train/loss"] < info["history"][0]["train/loss"] - 0.5
    assert info["history"][-1]["logit_scale"] != info["history"][0]["logit_scale"]  # the temperature is learned
    assert model.embed_dim == 64


def test_config_errors_name_the_fix(tmp_path, capsys):
    with pytest.raises(ConfigError, match="batch_size"):
        EmbedderConfig(batch_size=1)
    with pytest.raises(ConfigError, match="mineclip"):
        EmbedderConfig(mineclip={"patch_size": 33})
    assert main([f"recordings={tmp_path}", f"out={tmp_path / 'o'}"]) == 2
    assert "record captioned episodes first" in capsys.readouterr().err
    (tmp_path / "captions.jsonl").write_text('{"episode": "e", "start": 0}\n')
    assert main([f"recordings={tmp_path}", f"out={tmp_path / 'o'}"]) == 2
    assert "lacks ['end', 'text']" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# On real recordings of the embedded world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two short recorded demonstrator episodes with captions (the record job's files)."""
    from steve1_ray.world.record import RecordConfig, record_episodes

    root = tmp_path_factory.mktemp("world")
    record_episodes(RecordConfig(out=str(root), episodes=2, max_steps=90, seed=5, use_ray=False, progress=False))
    return root


@pytest.mark.slow
def test_clips_end_on_the_goal_reached_frame(world):
    from steve1_ray.data import load_contractor_episode
    from steve1_ray.train.embedder import build_clips, read_captions

    cfg = EmbedderConfig(recordings=str(world), clips_per_segment=3)
    data = build_clips(cfg, 16)
    rows = read_captions(world / "captions.jsonl")
    assert len(data) > 0 and data.index.shape[1] == 16
    name = data.episodes[0]
    ep = load_contractor_episode(world / "contractor" / f"{name}.mp4", world / "contractor" / f"{name}.jsonl",
                                 max_frame_mismatch=2)
    kept = np.asarray(ep.meta["kept_lines"])
    seg = [r for r in rows if r["episode"] == name and r["text"] == data.texts[0]]
    mine = [i for i in range(len(data)) if data.episodes[i] == name]
    ends = [i for i in mine if data.is_end[i]]
    assert ends, "every kept segment has the clip that ends on its goal-reached frame"
    for i in mine:
        clip = data.clips([i])[0]
        # the clip is 16 consecutive frames of the episode, found by its last frame
        last = next(t for t in range(15, len(ep.frames_mineclip)) if np.array_equal(ep.frames_mineclip[t], clip[-1])
                    and np.array_equal(ep.frames_mineclip[t - 15], clip[0]))
        r = next(r for r in rows if r["episode"] == name and r["start"] <= kept[last] <= r["end"]
                 and r["text"] == data.texts[i])
        assert r["start"] < kept[last] <= r["end"]
    assert seg
    # end_window: the extra clips of a segment end within its last 4 frames (overlapping windows share frames,
    # so within a segment the frame table is contiguous and index distances are frame distances)
    near = build_clips(EmbedderConfig(recordings=str(world), clips_per_segment=3, end_window=4), 16)
    checked = 0
    for seg_id in np.unique(near.segments):
        members = np.flatnonzero(near.segments == seg_id)
        end = int(near.index[members[near.is_end[members]][0], -1])
        for j in members[~near.is_end[members]]:
            assert 0 < end - int(near.index[j, -1]) <= 4
            checked += 1
    assert checked > 0
    with pytest.raises(ConfigError, match="end_window"):
        EmbedderConfig(end_window=-1)


@pytest.mark.slow
def test_job_writes_a_mineclip_checkpoint_any_width(world, tmp_path):
    """A 96-wide embedder: trained by the job, read by load_mineclip, the data pipeline's and the evaluation's
    loaders, and it feeds a policy goal layer of the same width."""
    from steve1_ray.data.embed import window_embeds
    from steve1_ray.models.loading import load_embedder
    from steve1_ray.models.policy import PolicyConfig, build_policy

    out = tmp_path / "emb"
    assert main([f"recordings={world}", f"out={out}", "epochs=1", "batch_size=8", "clips_per_segment=2",
                 "mineclip.embed_dim=96", "mineclip.temporal_heads=2", "mineclip.temporal_dim_head=32"]) == 0
    info = json.loads((out / "metrics.json").read_text())
    assert info["embed_dim"] == 96 and "val/text_to_clip_r@1" in info["final"]
    ckpt = torch.load(out / "mineclip.pth", weights_only=True)
    assert all(k.startswith("model.") for k in ckpt["state_dict"]) and ckpt["mineclip_config"]["embed_dim"] == 96
    model = load_mineclip(out / "mineclip.pth")
    for other in (load_embedder(str(out / "mineclip.pth"), "attn", device="cpu"), load_embedder(str(out / "mineclip.pth"))):
        assert other.embed_dim == 96
        for k, v in model.state_dict().items():
            assert torch.equal(v, other.state_dict()[k])
    frames = np.random.default_rng(0).integers(0, 255, (20, H, W, 3), dtype=np.uint8)
    embeds, valid = window_embeds(model, frames)
    assert embeds.shape == (20, 96) and valid.sum() == 5
    assert model.encode_text(["collect wood"]).shape == (1, 96)
    policy = build_policy(PolicyConfig.preset("debug", embed_dim=96))
    goal = torch.from_numpy(embeds[None, -2:])  # (1, 2, 96)
    logp, _ = policy(torch.zeros(1, 2, 128, 128, 3, dtype=torch.uint8), goal, torch.zeros(1, 2, dtype=torch.bool),
                     policy.initial_state(1))
    assert logp["buttons"].shape[:2] == (1, 2)


def test_job_script_exits_2_naming_the_fix(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "jobs" / "train_embedder.py"
    res = subprocess.run([sys.executable, str(script), f"recordings={tmp_path}", f"out={tmp_path / 'o'}"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "record captioned episodes first" in res.stderr


@pytest.mark.slow
def test_ray_train_workers_write_the_same_layout(world, tmp_path, ray_cluster):
    from steve1_ray.train.embedder import run

    # Half a CPU each: the session's 2-CPU cluster may still hold an actor of an earlier test (this test once
    # waited forever for two whole CPUs, sessions 19 and 23)
    out, lines = tmp_path / "emb", []
    info = run(EmbedderConfig(recordings=str(world), out=str(out), epochs=2, batch_size=8, clips_per_segment=2,
                              num_workers=2, cpus_per_worker=0.5), log=lines.append)
    assert info["embed_dim"] == 128 and info["history"] and "val/clip_to_goal_acc" in info["final"]
    # the workers' per-epoch progress (with an ETA) reaches the driver's log
    epochs = [l for l in lines if l.startswith("embedder: epoch")]
    assert [l.split()[2] for l in epochs] == ["1/2", "2/2"] and all("ETA" in l for l in epochs)
    cfg = load_mineclip(out / "mineclip.pth").cfg  # the world preset: 16-px patches on the player's surroundings
    assert cfg.patch_size == 16 and cfg.crop == (48, 64, 112, 128)
    # a cluster that can never place the workers is refused at once, naming the fix (Ray Train would wait forever)
    with pytest.raises(ConfigError, match="cpus_per_worker"):
        run(EmbedderConfig(recordings=str(world), out=str(tmp_path / "big"), epochs=1, num_workers=2,
                           cpus_per_worker=64))


def test_keeps_the_best_epoch_on_selection_episodes():
    from steve1_ray.train.embedder import selection_score, split_train_val_select

    data = _synthetic(episodes=12)
    cfg = EmbedderConfig(epochs=4, batch_size=12, lr=3e-3, warmup_steps=3, val_fraction=0.25, select_fraction=0.25,
                         mineclip={"patch_size": 32, "crop": None, "embed_dim": 32, "temporal_heads": 2,
                                   "temporal_dim_head": 16})
    train, val, select = split_train_val_select(data, cfg)
    sets = [set(x.episodes) for x in (train, val, select)]
    assert all(sets) and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(train) + len(val) + len(select) == len(data)
    model, info = train_embedder(cfg, train, val, log=lambda s: None, select=select)
    scores = [h["select/score"] for h in info["history"]]
    assert info["best_epoch"] == int(np.argmax(scores)) + 1 and info["final"] == info["history"][info["best_epoch"] - 1]
    # the model returned is that epoch's: its selection metrics are the recorded ones
    assert abs(selection_score(retrieval_metrics(model, select)) - max(scores)) < 1e-5
    # without selection episodes (or too few episodes to spare) the last epoch is kept
    assert split_train_val_select(data, EmbedderConfig(select_fraction=0.0))[2] is None
    assert split_train_val_select(_synthetic(episodes=4), cfg)[2] is None
    with pytest.raises(ConfigError, match="select_fraction"):
        EmbedderConfig(val_fraction=0.5, select_fraction=0.5)
    for bad in (0, -1.0):
        with pytest.raises(ConfigError, match="cpus_per_worker"):
            EmbedderConfig(cpus_per_worker=bad)


def test_embedder_goals_per_goal_accuracy_adds_up_to_the_jobs_clip_to_goal():
    """benchmarks/embedder_goals.py's per-goal numbers are the job's clip->goal accuracy split by goal: weighted by
    each goal's clips they give back `retrieval_metrics`' figure, and each goal's confusions count all its clips."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from embedder_goals import per_goal

    data = _synthetic()
    cfg = EmbedderConfig(epochs=4, batch_size=12, lr=3e-3, warmup_steps=3, mineclip={
        "patch_size": 32, "crop": None, "embed_dim": 64, "temporal_heads": 2, "temporal_dim_head": 32})
    model, _ = train_embedder(cfg, data, data, log=lambda s: None)
    acc, confused = per_goal(model, data)
    counts = {g: data.goals.count(g) for g in set(data.goals)}
    assert set(acc) == set(counts) and all(sum(confused[g].values()) == counts[g] for g in counts)
    overall = sum(acc[g] * counts[g] for g in counts) / len(data)
    assert abs(overall - retrieval_metrics(model, data)["clip_to_goal_acc"]) < 1e-9
    assert len(set(acc.values())) > 1 or overall in (0.0, 1.0)  # not one number copied to every goal
    # the job's own per-goal figure on the end clips adds up to its end-clip accuracy the same way
    m = retrieval_metrics(model, data)
    goals = np.asarray(data.goals)
    ends = {g: int((data.is_end & (goals == g)).sum()) for g in counts}
    per = {g: m[f"end_clip_to_goal_acc/{g}"] for g in counts if ends[g]}
    assert per and abs(sum(per[g] * ends[g] for g in per) / sum(ends.values()) - m["end_clip_to_goal_acc"]) < 1e-9
