"""Samplings: deterministic train/val by frame budget, weighted mixtures, val_from, the job's CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from steve1_ray.data import shards
from steve1_ray.data.sampling import create_sampling, read_sampling


def _fake_dataset(root, lengths: dict[str, int]):
    """Index entries only (sampling reads nothing else)."""
    store = shards.Store(root)
    for eid, n in lengths.items():
        store.write_json(f"index/{eid}.json", {"episode_id": eid, "n_frames": n, "n_segments": 0, "segments": []})
    return str(root)


@pytest.fixture()
def ds(tmp_path):
    return _fake_dataset(tmp_path / "a", {f"a{i:02d}": 700 + 10 * i for i in range(20)} | {"short": 100})


def test_budgets_split_by_episode_and_seeded(tmp_path, ds):
    info = create_sampling([ds], "neurips", tmp_path / "s", val_frames=1500, train_frames=3000)
    train = [e for _, e in read_sampling(tmp_path / "s", "neurips", "train")]
    val = [e for _, e in read_sampling(tmp_path / "s", "neurips", "val")]
    assert not set(train) & set(val) and "short" not in train + val  # < 655 frames: left out
    assert 3000 <= info["train_frames"] < 3000 + 900 and 1500 <= info["val_frames"] < 1500 + 900
    assert (tmp_path / "s" / "neurips_train.txt").read_text().splitlines() == train  # plain ids
    again = create_sampling([ds], "again", tmp_path / "s", val_frames=1500, train_frames=3000)
    assert (tmp_path / "s" / "again_train.txt").read_text() == (tmp_path / "s" / "neurips_train.txt").read_text()
    assert again["val_frames"] == info["val_frames"]
    other = create_sampling([ds], "other", tmp_path / "s", val_frames=1500, train_frames=3000, seed=7)
    assert (tmp_path / "s" / "other_train.txt").read_text() != (tmp_path / "s" / "neurips_train.txt").read_text()
    assert other["train_frames"] >= 3000
    assert read_sampling(tmp_path / "s", "neurips", "train")[0][0] == ds  # root from the json


def test_all_but_val_and_val_from(tmp_path, ds):
    info = create_sampling([ds], "full", tmp_path, val_frames=1500)
    assert info["train_frames"] + info["val_frames"] == sum(700 + 10 * i for i in range(20))
    create_sampling([ds], "small", tmp_path, val_frames=0, train_frames=2000, val_from="full")
    assert read_sampling(tmp_path, "small", "val") == read_sampling(tmp_path, "full", "val")
    assert not {e for _, e in read_sampling(tmp_path, "small", "train")} & {e for _, e in read_sampling(tmp_path, "full", "val")}


def test_mixture_weights(tmp_path, ds):
    other = _fake_dataset(tmp_path / "b", {f"b{i:02d}": 700 for i in range(10)})
    info = create_sampling([f"{ds}:0.8", f"{other}:0.2"], "mix", tmp_path, val_frames=1000, train_frames=7000)
    by_root = {d["root"]: d for d in info["datasets"]}
    assert by_root[ds]["train_frames"] >= 5600 and by_root[other]["train_frames"] >= 1400
    assert by_root[ds]["train_frames"] < 5600 + 900 and by_root[other]["train_frames"] < 1400 + 700
    rows = read_sampling(tmp_path, "mix", "train")
    assert {r for r, _ in rows} == {ds, other}
    assert (tmp_path / "mix_train.txt").read_text().splitlines()[0].count("\t") == 1
    # train_frames=-1: the largest budget both can give at 80/20 (b has 10 x 700 minus val)
    info = create_sampling([(ds, 0.8), (other, 0.2)], "mixall", tmp_path, val_frames=1000)
    d = {x["root"]: x for x in info["datasets"]}
    assert d[ds]["train_frames"] / (d[ds]["train_frames"] + d[other]["train_frames"]) == pytest.approx(0.8, abs=0.06)


def test_relative_roots_are_written_absolute(tmp_path, ds, monkeypatch):
    # training reads the roots in Ray Train workers, which start in another folder: "a" must not stay "a"
    monkeypatch.chdir(tmp_path)
    info = create_sampling(["a"], "rel", "s", val_frames=1000)
    assert info["datasets"][0]["root"] == str((tmp_path / "a").resolve())
    other = _fake_dataset(tmp_path / "b", {f"b{i:02d}": 700 for i in range(10)})
    mix = create_sampling(["a:0.8", "b:0.2"], "relmix", "s", val_frames=1000)
    assert {d["root"] for d in mix["datasets"]} == {str((tmp_path / "a").resolve()), str(Path(other).resolve())}
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    rows = read_sampling(tmp_path / "s", "rel", "train")
    assert rows and {root for root, _ in rows} == {str((tmp_path / "a").resolve())}
    assert set(shards.list_episodes(shards.Store(rows[0][0]))) >= {eid for _, eid in rows}
    # val_from an older sampling that stored the root as given still finds its val episodes
    (tmp_path / "s" / "old_sampling.json").write_text((tmp_path / "s" / "rel_sampling.json").read_text()
                                                       .replace(str((tmp_path / "a").resolve()), "a"))
    for split in ("train", "val"):
        (tmp_path / "s" / f"old_{split}.txt").write_text((tmp_path / "s" / f"rel_{split}.txt").read_text())
    monkeypatch.chdir(tmp_path)
    again = create_sampling(["a"], "again", "s", val_frames=0, val_from="old")
    assert read_sampling("s", "again", "val") == read_sampling("s", "rel", "val")
    assert again["val_frames"] == info["val_frames"]


def test_bad_requests_name_the_fix(tmp_path, ds):
    with pytest.raises(ValueError, match="lower train_frames"):
        create_sampling([ds], "x", tmp_path, val_frames=100, train_frames=10**7)
    with pytest.raises(ValueError, match="lower min_frames"):
        create_sampling([ds], "x", tmp_path, val_frames=100, min_frames=10**6)
    with pytest.raises(FileNotFoundError, match="steve1 sampling name=nope"):
        read_sampling(tmp_path, "nope", "train")


def test_job_runs_as_a_script(tmp_path, ds):
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "create_sampling.py"), "name=cli", f"datasets=[{ds}]",
                          "val_frames=1000", "train_frames=2000", f"output_dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cli_train.txt").exists() and '"train_frames"' in out.stdout
    assert yaml.safe_load((tmp_path / "cli_config.yaml").read_text())["val_frames"] == 1000  # saved beside
    bad = subprocess.run([sys.executable, str(REPO / "jobs" / "create_sampling.py"), f"datasets=[{ds}]",
                          "val_frames=1000"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "give the sampling a name" in bad.stderr  # a config error names the fix
    again = subprocess.run([sys.executable, str(REPO / "jobs" / "create_sampling.py"), "name=cli2", f"datasets=[{ds}]",
                            "val_from=cli", "train_frames=1000", f"output_dir={tmp_path}"],
                           capture_output=True, text=True, timeout=120)  # val_from: no val_frames needed
    assert again.returncode == 0, again.stderr
    assert read_sampling(tmp_path, "cli2", "val") == read_sampling(tmp_path, "cli", "val")
