"""Sweep configs and search spaces (steve1_ray.sweep.space): parsing, validation against TrainConfig, trial configs
(no Ray)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from steve1_ray.config import ConfigError, load_config
from steve1_ray.sweep.space import (SweepConfig, apply_params, check_min_max_pairs, check_search,
                                    check_space_against, load_base_train_config, parse_space, trial_train_config)
from steve1_ray.train.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
SPACES = sorted((REPO / "configs" / "sweep").glob("*.yaml"))


def test_parse_space_reads_every_distribution():
    params = {p.key: p for p in parse_space({
        "lr": {"dist": "loguniform", "low": "1e-5", "high": 1.0e-3},  # YAML reads 1e-5 as a string
        "p_uncond": {"dist": "uniform", "low": 0, "high": 0.3},
        "min_btwn_goals": {"dist": "int", "low": 15, "high": 30},
        "batch_size": {"dist": "choice", "values": [4, 8]},
        "T": {"dist": "grid", "values": [320, 640]},
        "trunc_t": 64,
    })}
    assert params["lr"].low == pytest.approx(1e-5) and params["lr"].bounds == (1e-5, 1e-3)
    assert params["p_uncond"].low == 0.0 and isinstance(params["p_uncond"].low, float)
    assert params["min_btwn_goals"].bounds == (15, 30)
    assert params["batch_size"].candidates() == [4, 8]
    assert params["trunc_t"].dist == "fixed" and params["trunc_t"].candidates() == [64]


@pytest.mark.parametrize("space, fragment", [
    ({"lr": {"dist": "normal", "low": 0, "high": 1}}, "dist='normal' must be one of"),
    ({"lr": {"dist": "loguniform", "low": 0.0, "high": 1e-3}}, "needs low > 0"),
    ({"lr": {"dist": "uniform", "low": 1e-3, "high": 1e-4}}, "must be < high"),
    ({"lr": {"dist": "uniform", "low": "abc", "high": 1}}, "'abc' is not a number"),
    ({"batch_size": {"dist": "choice", "values": []}}, "non-empty list 'values'"),
    ({"batch_size": {"dist": "int", "low": 1.5, "high": 4}}, "integer low/high"),
    ({"batch_size": {"dist": "choice", "values": [1], "low": 0}}, "unknown key(s) ['low']"),
    ({"batch_size": [4, 8]}, "a list is ambiguous"),
])
def test_parse_space_names_the_mistake(space, fragment):
    with pytest.raises(ConfigError) as e:
        parse_space(space)
    assert fragment in str(e.value)


def test_grid_needs_random_search():
    with pytest.raises(ConfigError, match="dist=grid needs search=random"):
        check_search(parse_space({"T": {"dist": "grid", "values": [16, 32]}}), "optuna")
    check_search(parse_space({"T": {"dist": "grid", "values": [16, 32]}}), "random")


def test_min_btwn_goals_must_stay_below_max_for_every_sample():
    ok = parse_space({"min_btwn_goals": {"dist": "int", "low": 15, "high": 60},
                      "max_btwn_goals": {"dist": "int", "low": 100, "high": 400}})
    check_min_max_pairs(ok)
    overlapping = parse_space({"min_btwn_goals": {"dist": "int", "low": 15, "high": 120},
                               "max_btwn_goals": {"dist": "int", "low": 100, "high": 400}})
    with pytest.raises(ConfigError, match=r"min_btwn_goals can reach 120 but max_btwn_goals can be as low as 100"):
        check_min_max_pairs(overlapping)
    # only one side swept: checked against the other side's value in the training config
    one_side = parse_space({"min_btwn_goals": {"dist": "choice", "values": [15, 250]}})
    check_min_max_pairs(one_side, {"max_btwn_goals": 300})
    with pytest.raises(ConfigError, match="max_btwn_goals can be as low as 200"):
        check_min_max_pairs(one_side, {"max_btwn_goals": 200})


def test_space_is_checked_against_the_training_config():
    base = apply_params({}, {})
    check_space_against(parse_space({"T": {"dist": "choice", "values": [320, 640]},
                                     "trunc_t": {"dist": "choice", "values": [32, 64]}}), TrainConfig, base)
    cases = [
        ({"T": {"dist": "choice", "values": [320, 640]}, "trunc_t": {"dist": "choice", "values": [64, 100]}},
         "not a multiple of trunc_t"),
        ({"p_uncond": {"dist": "uniform", "low": 0.0, "high": 1.5}}, "p_uncond=1.5 must be in [0, 1]"),
        ({"min_btwn_goals": {"dist": "int", "low": 0, "high": 20}}, "must be >= 1"),
        ({"learning_rate": {"dist": "loguniform", "low": 1e-5, "high": 1e-3}}, "unknown key(s) ['learning_rate']"),
    ]
    for space, fragment in cases:
        with pytest.raises(ConfigError) as e:
            check_space_against(parse_space(space), TrainConfig, base)
        assert fragment in str(e.value), str(e.value)


def test_apply_params_sets_dotted_keys_on_a_copy():
    base = {"lr": 1.0, "policy": {"hidsize": 8}}
    out = apply_params(base, {"lr": 2.0, "policy.hidsize": 16})
    assert out == {"lr": 2.0, "policy": {"hidsize": 16}} and base["policy"]["hidsize"] == 8
    with pytest.raises(ConfigError, match="'lr' is not a section"):
        apply_params(base, {"lr.x": 1})


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_shipped_spaces_are_valid(path, data_root):
    cfg = load_config(SweepConfig, [path])
    cfg.train_overrides.append(f"data={data_root}")
    params = parse_space(cfg.space)
    base = load_base_train_config(cfg)
    check_min_max_pairs(params, base)
    check_space_against(params, TrainConfig, base)
    check_search(params, cfg.search)
    swept = {p.key for p in params if p.dist != "fixed"}
    assert {"lr", "p_uncond", "min_btwn_goals", "max_btwn_goals"} <= swept
    assert base["num_workers"] >= 1


def test_sweep_config_rejects_bad_values():
    for override, fragment in [("search=grid", "search='grid' must be one of"),
                               ("scheduler=pbt", "scheduler='pbt'"),
                               ("max_concurrent_trials=0", "must be >= 1"),
                               ("trial_driver_cpus=0", "Tune rejects an empty request"),
                               ("space={}", "space is empty")]:
        with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
            load_config(SweepConfig, [REPO / "configs/sweep/debug.yaml"], [override])


def test_base_config_needs_data_and_a_train_worker(data_root):
    cfg = load_config(SweepConfig, [REPO / "configs/sweep/debug.yaml"])
    with pytest.raises(ConfigError, match="pass train.data="):
        load_base_train_config(cfg)
    cfg.train_overrides += [f"data={data_root}", "num_workers=0"]
    with pytest.raises(ConfigError, match="local mode"):
        load_base_train_config(cfg)


def test_trial_config_writes_under_its_own_run_and_pins_validation(data_root, tmp_path):
    cfg = load_config(SweepConfig, [REPO / "configs/sweep/debug.yaml"], [])
    cfg.train_overrides += [f"data={data_root}", "out_weights=/elsewhere/w.weights", "tensorboard_dir=/tb"]
    base = load_base_train_config(cfg)
    t = trial_train_config(base, {"lr": 0.5, "p_uncond": 0.25}, storage_path=str(tmp_path), run_name="train")
    assert (t.lr, t.p_uncond, t.run_name, t.storage_path) == (0.5, 0.25, "train", str(tmp_path))
    assert t.out_weights is None and t.tensorboard_dir is None  # no two trials share a file
    assert t.resolved_tensorboard_dir() == str(tmp_path / "train" / "tensorboard")
    val_p_uncond = getattr(t, "val_p_uncond", None)
    assert val_p_uncond in (None, base["p_uncond"])  # pinned when the training config supports it


def test_importing_the_space_does_not_import_ray():
    code = "import sys, steve1_ray.sweep.space; assert not [m for m in sys.modules if m.split('.')[0] == 'ray']"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
