"""Sweep configs and search spaces: parsing, validation against TrainConfig, best-config export (no Ray)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from steve1_ray.config import ConfigError, load_config
from steve1_ray.sweep import (SweepConfig, apply_params, check_min_max_pairs, check_space_against,
                              load_base_train_config, main, parse_space, to_tune_space, trial_train_config,
                              write_best, write_results)
from steve1_ray.train.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
SPACES = sorted((REPO / "tune" / "spaces").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    """The base training config must point at an existing dataset; its contents do not matter here."""
    root = tmp_path_factory.mktemp("shards")
    (root / "manifest.json").write_text("{}")
    return str(root)


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

    space = to_tune_space(list(params.values()), "random")
    assert space["trunc_t"] == 64 and space["T"] == {"grid_search": [320, 640]}
    # `int` bounds are inclusive: Tune's randint upper bound is exclusive
    assert (space["min_btwn_goals"].lower, space["min_btwn_goals"].upper) == (15, 31)
    assert sorted(space["batch_size"].categories) == [4, 8]


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
        to_tune_space(parse_space({"T": {"dist": "grid", "values": [16, 32]}}), "optuna")


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
    to_tune_space(params, cfg.search)
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
            load_config(SweepConfig, [REPO / "tune/spaces/debug.yaml"], [override])


def test_base_config_needs_data_and_a_train_worker(data_root):
    cfg = load_config(SweepConfig, [REPO / "tune/spaces/debug.yaml"])
    with pytest.raises(ConfigError, match="pass train.data="):
        load_base_train_config(cfg)
    cfg.train_overrides += [f"data={data_root}", "num_workers=0"]
    with pytest.raises(ConfigError, match="local mode"):
        load_base_train_config(cfg)


def test_cli_reports_config_errors_before_touching_ray(capsys, data_root):
    import ray

    debug = str(REPO / "tune/spaces/debug.yaml")
    was_initialized = ray.is_initialized()  # the session's cluster fixture may already be up in a full run
    assert main(["--config", debug, "search=bayes"]) == 2
    assert "search='bayes' must be one of" in capsys.readouterr().err
    assert main(["--config", debug]) == 2
    assert "pass train.data=<shard dataset root>" in capsys.readouterr().err
    assert main(["--config", debug, f"train.data={data_root}", "train.T=20"]) == 2  # trunc_t=8
    assert "T=20 is not a multiple of trunc_t=8" in capsys.readouterr().err
    assert ray.is_initialized() == was_initialized


def test_trial_config_writes_under_its_own_run_and_pins_validation(data_root, tmp_path):
    cfg = load_config(SweepConfig, [REPO / "tune/spaces/debug.yaml"], [])
    cfg.train_overrides += [f"data={data_root}", "out_weights=/elsewhere/w.weights", "tensorboard_dir=/tb"]
    base = load_base_train_config(cfg)
    t = trial_train_config(base, {"lr": 0.5, "p_uncond": 0.25}, storage_path=str(tmp_path), run_name="train")
    assert (t.lr, t.p_uncond, t.run_name, t.storage_path) == (0.5, 0.25, "train", str(tmp_path))
    assert t.out_weights is None and t.tensorboard_dir is None  # no two trials share a file
    assert t.resolved_tensorboard_dir() == str(tmp_path / "train" / "tensorboard")
    val_p_uncond = getattr(t, "val_p_uncond", None)
    assert val_p_uncond in (None, base["p_uncond"])  # pinned when the training config supports it


def test_results_table_and_best_config(data_root, tmp_path):
    cfg = load_config(SweepConfig, [REPO / "tune/spaces/debug.yaml"], [])
    cfg.train_overrides.append(f"data={data_root}")
    base = load_base_train_config(cfg)
    rows = [  # as trial_rows sorts them: best first
        {"trial": "b", "status": "completed", "lr": 3e-3, "p_uncond": 0.1, "min_btwn_goals": 16,
         "max_btwn_goals": 30, "batch_size": 2, "best val/loss": 1.5, "frames": 512, "error": "", "path": "/b"},
        {"trial": "a", "status": "stopped early", "lr": 1e-4, "p_uncond": 0.2, "min_btwn_goals": 15,
         "max_btwn_goals": 25, "batch_size": 1, "best val/loss": 9.0, "frames": 128, "error": "", "path": "/a"},
    ]
    write_results(rows, tmp_path)
    table = (tmp_path / "results.md").read_text().splitlines()
    assert table[0].startswith("| trial | status | lr |") and "stopped early" in table[3]
    best = write_best(rows, cfg, base, tmp_path)
    assert best["trial"] == "b" and best["params"]["lr"] == 3e-3
    text = (tmp_path / "best_train_config.yaml").read_text()
    assert text.startswith("# best trial b of sweep debug_sweep: val/loss = 1.5")
    loaded = load_config(TrainConfig, [tmp_path / "best_train_config.yaml"])  # ready to run
    assert (loaded.lr, loaded.batch_size, loaded.max_btwn_goals) == (3e-3, 2, 30)
    assert loaded.run_name == "debug_sweep-best" and loaded.n_frames == base["n_frames"]
    assert yaml.safe_load((tmp_path / "best.json").read_text())["best val/loss"] == 1.5
    assert write_best([{**rows[0], "best val/loss": None}], cfg, base, tmp_path / "none") is None


def test_optuna_samples_inside_the_space():
    from steve1_ray.sweep import make_search

    cfg = load_config(SweepConfig, [REPO / "tune/spaces/paper.yaml"])
    search, max_concurrent = make_search(cfg)
    assert type(search).__name__ == "OptunaSearch" and max_concurrent == cfg.max_concurrent_trials
    params = parse_space(cfg.space)
    assert search.set_search_properties(cfg.metric, cfg.mode, to_tune_space(params, cfg.search))
    for i in range(20):
        sample = search.suggest(f"t{i}")
        for p in params:
            value = sample[p.key]
            if p.dist == "choice":
                assert value in p.values
            else:
                assert p.low <= value <= p.high, (p.key, value)
            if p.dist == "int":
                assert isinstance(value, int)
        search.on_trial_complete(f"t{i}", {cfg.metric: float(sample["lr"]) * 1e4})
    assert sample["min_btwn_goals"] < sample["max_btwn_goals"]


def test_random_search_limits_concurrency_itself():
    from steve1_ray.sweep import make_search

    cfg = load_config(SweepConfig, [REPO / "tune/spaces/debug.yaml"], ["max_concurrent_trials=3"])
    search, max_concurrent = make_search(cfg)
    assert search.max_concurrent == 3 and max_concurrent is None
