"""World embedder trained on goal paraphrases (steve1_ray.train.embedder `paraphrases`), the held-out phrasing
metrics and the per-epoch progress lines."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import steve1_ray.train.embedder as E
from steve1_ray.config import ConfigError
from steve1_ray.train.embedder import (EmbedderConfig, _Tail, paraphrase_texts, progress_line, retrieval_metrics,
                                       split_by_episode, train_embedder)
from steve1_ray.models.mineclip import load_mineclip
from steve1_ray.world.phrases import HELDOUT, template_phrases

from test_embedder import _synthetic

_ENCODE_TEXTS = E.encode_texts
REAL = ["collect_wood", "eat_cow", "collect_drink", "place_table"]
TINY = {"patch_size": 32, "crop": None, "embed_dim": 32, "temporal_heads": 2, "temporal_dim_head": 16}


def _world_goals(**kw):
    """The synthetic clips of test_embedder, labelled with four of the world's goals and their captions."""
    from steve1_ray.world.demonstrators import GOALS

    data = _synthetic(**kw)
    data.goals = [REAL[int(g[4:])] for g in data.goals]
    data.texts = [GOALS[g].captions[i % 2] for i, g in enumerate(data.goals)]
    return data


def test_paraphrase_texts_is_seeded_and_stays_in_the_goal():
    data = _world_goals()
    table = template_phrases()
    assert paraphrase_texts(data.texts, data.goals, 0.0, 0) == data.texts
    all_ = paraphrase_texts(data.texts, data.goals, 1.0, [0, 29, 0])
    assert all(t in table[g] for t, g in zip(all_, data.goals))
    assert len(set(all_)) > len(set(data.texts))
    half = paraphrase_texts(data.texts, data.goals, 0.5, 7)
    assert half == paraphrase_texts(data.texts, data.goals, 0.5, 7)  # reproducible
    assert half != paraphrase_texts(data.texts, data.goals, 0.5, 8)  # a new draw each epoch
    swapped = sum(a != b for a, b in zip(half, data.texts))
    assert 0.25 * len(half) < swapped < 0.75 * len(half)
    # goals without templates keep their text
    assert paraphrase_texts(["x", "y"], ["goal0", "goal1"], 1.0, 0) == ["x", "y"]
    with pytest.raises(ConfigError, match="paraphrases"):
        EmbedderConfig(paraphrases=1.5)


def _texts_seen(monkeypatch, **cfg_kw):
    """Train one epoch; return the texts the text tower was given (the real encode_texts, observed)."""
    seen = []

    def spy(model, texts):
        seen.extend(texts)
        return _ENCODE_TEXTS(model, texts)

    monkeypatch.setattr(E, "encode_texts", spy)
    data = _world_goals()
    train, val = split_by_episode(data, 0.34, seed=0)
    cfg = EmbedderConfig(epochs=1, batch_size=12, warmup_steps=1, mineclip=TINY, **cfg_kw)
    _, info = train_embedder(cfg, train, val, log=lambda s: None)
    return seen, set(train.texts), info


@pytest.mark.slow
def test_training_feeds_template_paraphrases_to_the_text_tower(monkeypatch):
    table = {p for ps in template_phrases().values() for p in ps}
    off, captions, _ = _texts_seen(monkeypatch, paraphrases=0.0)
    assert set(off) <= captions  # the old behaviour: recorded captions only
    on, _, info = _texts_seen(monkeypatch, paraphrases=0.5)
    assert len(on) == len(off)
    new = [t for t in on if t not in captions]
    assert len(new) >= len(on) // 4 and all(t in table for t in new)
    again, _, _ = _texts_seen(monkeypatch, paraphrases=0.5)
    assert again == on  # seeded (other seeds and epochs draw others: test_paraphrase_texts_is_seeded_...)
    # the held-out phrasings are never trained on
    assert not set(on) & {p for ps in HELDOUT.values() for p in ps}
    final = info["final"]
    for key in ("heldout_phrase", "caption", "template"):
        assert 0.0 <= final[f"val/{key}/goal_acc"] <= 1.0 and final[f"val/{key}/n"] > 0
        assert 0.0 < final[f"val/{key}/r@1_chance"] < 1.0
    assert final["val/phrase_goal_chance"] == 0.25
    assert final["val/heldout_phrase/n"] == sum(len(HELDOUT[g]) for g in REAL)


def test_heldout_metrics_score_a_perfect_text_side():
    """phrase_metrics on an embedder whose text side is exact: every phrase's goal is found."""
    data = _world_goals()
    model = load_mineclip(None, EmbedderConfig(mineclip=TINY).model_config(), seed=0)
    m = retrieval_metrics(model, data)
    assert m["heldout_phrase/n"] == sum(len(HELDOUT[g]) for g in REAL) and m["phrase_goal_chance"] == 0.25
    # clip embeddings = one direction per goal; texts = the direction of their goal
    goal_of = {}
    for table in (HELDOUT, template_phrases()):
        for g, ps in table.items():
            for p in ps:
                goal_of[p] = g
    from steve1_ray.world.demonstrators import GOALS
    for g in GOALS.values():
        for c in g.captions:
            goal_of[c] = g.name
    import torch

    basis = torch.eye(32)[:len(REAL)]
    v = basis[[REAL.index(g) for g in data.goals]]
    model.encode_text = lambda texts: basis[[REAL.index(goal_of[t]) for t in texts]]
    got = E.phrase_metrics(model, data, v)
    for key in ("heldout_phrase", "caption", "template"):
        assert got[f"{key}/goal_acc"] == 1.0 and got[f"{key}/r@1"] == 1.0
    # goals outside the world's (the synthetic labels) give no phrase metrics
    assert not any("phrase" in k for k in retrieval_metrics(load_mineclip(None, EmbedderConfig(mineclip=TINY)
                                                                          .model_config(), seed=0), _synthetic()))


def test_progress_line_has_the_eta_and_the_tail_relays_lines(tmp_path):
    line = progress_line({"epoch": 3, "seconds": 130.0, "train/loss": 2.31, "val/text_to_clip_r@1": 0.41,
                          "val/heldout_phrase/goal_acc": 0.5, "val/phrase_goal_chance": 0.25}, 8)
    assert line.startswith("embedder: epoch 3/8") and "loss 2.310" in line and "val R@1 0.41" in line
    assert "held-out phrase->goal 0.50" in line and "elapsed 2m10s" in line and "ETA 3m37s" in line
    path = tmp_path / "progress.log"
    path.write_text("")
    got = []

    def writer():
        for i in range(3):
            with open(path, "a") as f:
                f.write(f"line {i}\n")
            time.sleep(0.15)
        with open(path, "a") as f:
            f.write("partial")  # no newline yet: not relayed until complete

    with _Tail(path, got.append, every=0.05):
        t = threading.Thread(target=writer)
        t.start()
        t.join()
        time.sleep(0.2)
        assert got == ["line 0", "line 1", "line 2"]  # relayed while the block runs
        with open(path, "a") as f:
            f.write(" now\n")
    assert got == ["line 0", "line 1", "line 2", "partial now"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from steve1_ray.world.record import RecordConfig, record_episodes

    root = tmp_path_factory.mktemp("world")
    record_episodes(RecordConfig(out=str(root), episodes=2, max_steps=90, seed=5, use_ray=False, progress=False))
    return root


@pytest.mark.slow
def test_job_reports_heldout_phrasings_in_metrics_json_and_progress(world, tmp_path):
    out = tmp_path / "emb"
    lines = []
    info = E.run(EmbedderConfig(recordings=str(world), out=str(out), epochs=2, batch_size=8, clips_per_segment=2,
                                paraphrases=0.5), log=lines.append)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["final"] == info["final"]
    for key in ("heldout_phrase/goal_acc", "caption/goal_acc", "phrase_goal_chance"):
        assert key.join(["val/", ""]) in saved["final"], key
    progress = (out / "progress.log").read_text().splitlines()
    assert [p.split()[2] for p in progress] == ["1/2", "2/2"] and all("ETA" in p for p in progress)
    assert progress == [l for l in lines if l.startswith("embedder: epoch")]
