"""Original file formats: `.model` (restricted unpickler) and `.weights` (strict, prefixes, export)."""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import pytest
import torch

from steve1_ray.models.formats import (GOAL_KEYS, UnsafePickleError, WeightsError, load_policy, load_weights,
                                       read_model_file, read_model_kwargs, save_weights, write_model_file)
from steve1_ray.models.policy import PolicyConfig, build_policy



@pytest.fixture(scope="module")
def original_sd(fixtures_dir):
    return torch.load(fixtures_dir / "policy" / "debug.weights", weights_only=True)


# ---------------------------------------------------------------- .model
def test_original_model_file_is_the_debug_preset(fixtures_dir):
    ignored = []
    cfg = read_model_file(fixtures_dir / "policy" / "debug.model", report=ignored)
    assert cfg == PolicyConfig.preset("debug")
    assert ignored == ["only_img_input"]


def test_write_model_file_round_trip_and_original_structure(tmp_path):
    cfg = PolicyConfig.preset("debug", embed_dim=768, temperature=1.5)
    path = write_model_file(cfg, tmp_path / "x.model")
    with open(path, "rb") as f:
        d = pickle.load(f)
    args = d["model"]["args"]
    assert args["pi_head_opts"] == {"temperature": 1.5}
    assert args["net"]["args"]["hidsize"] == 64 and args["net"]["args"]["mineclip_embed_dim"] == 768
    assert "activation_checkpointing" not in args["net"]["args"]
    assert read_model_file(path) == cfg


def test_unknown_kwargs_accepted_and_reported(tmp_path):
    kwargs = PolicyConfig.preset("debug").to_model_kwargs()
    kwargs.update(active_reward_monitors={"a": 1}, impala_chans=(4, 8, 8))
    d = OrderedDict(model={"args": {"net": {"args": kwargs}, "pi_head_opts": {"temperature": 2}}}, version=3)
    path = tmp_path / "extra.model"
    path.write_bytes(pickle.dumps(d, protocol=2))  # OrderedDict is pickled as a global: allowed
    ignored = []
    cfg = read_model_file(path, report=ignored)
    assert ignored == ["active_reward_monitors"]
    assert cfg.impala_chans == [4, 8, 8] and cfg.temperature == 2.0


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_model_pickle_is_refused_without_executing(tmp_path):
    marker = tmp_path / "PWNED"
    d = {"model": {"args": {"net": {"args": {"hidsize": _Hostile(marker)}}, "pi_head_opts": {}}}}
    path = tmp_path / "evil.model"
    path.write_bytes(pickle.dumps(d))
    with pytest.raises(UnsafePickleError, match=r"evil.model.*(posix|os|nt)\.system"):
        read_model_file(path)
    assert not marker.exists()
    with pytest.raises(UnsafePickleError):
        load_policy(path)
    assert not marker.exists()


def test_hostile_global_builtins_eval_is_refused(tmp_path):
    payload = b"cbuiltins\neval\n(V__import__('os').system('touch " + str(tmp_path / "M").encode() + b"')\ntR."
    path = tmp_path / "evil2.model"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        read_model_kwargs(path)
    assert not (tmp_path / "M").exists()


def test_model_file_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="preset name"):
        read_model_file(tmp_path / "nope.model")
    (tmp_path / "junk.model").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a readable .model pickle"):
        read_model_file(tmp_path / "junk.model")
    (tmp_path / "wrong.model").write_bytes(pickle.dumps({"foo": 1}))
    with pytest.raises(ValueError, match=r"\['net'\]\['args'\]"):
        read_model_file(tmp_path / "wrong.model")
    kwargs = PolicyConfig.preset("debug").to_model_kwargs()
    kwargs["recurrence_type"] = "gru"
    (tmp_path / "bad.model").write_bytes(pickle.dumps({"model": {"args": {"net": {"args": kwargs}}}}))
    with pytest.raises(ValueError, match="bad.model.*recurrence_type='gru'"):
        read_model_file(tmp_path / "bad.model")


# ---------------------------------------------------------------- .weights
def test_load_save_load_is_bit_exact_in_original_layout(fixtures_dir, tmp_path, original_sd):
    policy = load_policy(fixtures_dir / "policy" / "debug.model", fixtures_dir / "policy" / "debug.weights")
    assert policy.load_report.prefix is None and policy.load_report.missing == []
    out = save_weights(policy, tmp_path / "out.weights")
    saved = torch.load(out, weights_only=True)
    assert list(saved) == list(original_sd)
    assert all(torch.equal(saved[k], original_sd[k]) for k in saved)
    again = build_policy("debug")
    load_weights(again, out)
    assert all(torch.equal(v, original_sd[k]) for k, v in again.state_dict().items())


def test_save_weights_unwraps_data_parallel(tmp_path, original_sd):
    policy = build_policy("debug")
    load_weights(policy, original_sd)
    save_weights(torch.nn.DataParallel(policy), tmp_path / "dp.weights")
    assert list(torch.load(tmp_path / "dp.weights", weights_only=True)) == list(original_sd)


@pytest.mark.parametrize("prefix", ["module.policy.", "policy."])
def test_prefixes_are_stripped(prefix, original_sd):
    policy = build_policy("debug")
    report = load_weights(policy, {prefix + k: v for k, v in original_sd.items()})
    assert report.prefix == prefix and report.n_loaded == len(original_sd)
    assert torch.equal(policy.state_dict()["net.final_ln.weight"], original_sd["net.final_ln.weight"])


def test_vpt_file_without_goal_layer_reports_missing(tmp_path, original_sd):
    vpt = {k: v for k, v in original_sd.items() if k not in GOAL_KEYS}
    torch.save(vpt, tmp_path / "vpt.weights")
    policy = build_policy("debug")
    fresh_goal = policy.net.mineclip_embed_linear.weight.detach().clone()
    report = load_weights(policy, tmp_path / "vpt.weights")
    assert report.missing == list(GOAL_KEYS) and report.missing_goal_layer
    assert "missing" in str(report)
    assert torch.equal(policy.net.mineclip_embed_linear.weight, fresh_goal)
    assert torch.equal(policy.net.final_ln.bias, original_sd["net.final_ln.bias"])
    with pytest.raises(WeightsError, match="mineclip_embed_linear"):
        load_weights(build_policy("debug"), vpt, allow_missing_goal=False)


def test_extra_missing_and_mismatched_keys_are_rejected(original_sd):
    policy = build_policy("debug")
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    with pytest.raises(WeightsError, match=r"unexpected key.*net\.bogus.*wrong model= preset"):
        load_weights(policy, {**original_sd, "net.bogus": torch.zeros(1)})
    missing = {k: v for k, v in original_sd.items() if k != "net.final_ln.weight"}
    with pytest.raises(WeightsError, match=r"missing.*net\.final_ln\.weight"):
        load_weights(policy, missing)
    bad = dict(original_sd)
    bad["net.final_ln.weight"] = torch.zeros(128)
    with pytest.raises(WeightsError, match=r"net\.final_ln\.weight has shape \(128,\) but the model "
                                           r"expects \(64,\): wrong model= preset"):
        load_weights(policy, bad)
    # nothing was half-loaded
    assert all(torch.equal(v, before[k]) for k, v in policy.state_dict().items())


def test_weights_of_another_architecture_are_rejected(fixtures_dir):
    with pytest.raises(WeightsError, match="wrong model= preset"):
        load_policy("debug", fixtures_dir / "policy" / "bilstm.weights")


def test_unreadable_weights_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such .weights"):
        load_weights(build_policy("debug"), tmp_path / "nope.weights")
    (tmp_path / "junk.weights").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_weights(build_policy("debug"), tmp_path / "junk.weights")
    torch.save([1, 2], tmp_path / "list.weights")
    with pytest.raises(WeightsError, match="expected a state_dict"):
        load_weights(build_policy("debug"), tmp_path / "list.weights")


def test_half_precision_file_loads_into_fp32_policy(tmp_path, original_sd):
    torch.save({k: v.half() for k, v in original_sd.items()}, tmp_path / "h.weights")
    policy = build_policy("debug")
    report = load_weights(policy, tmp_path / "h.weights")
    assert report.dtypes == ["float16"] and policy.net.final_ln.weight.dtype == torch.float32


# ---------------------------------------------------------------- command line
def test_cli_convert_prefixed_file_to_original_layout(tmp_path, fixtures_dir, original_sd, capsys):
    from steve1_ray.models.formats import main

    torch.save({"policy." + k: v for k, v in reversed(list(original_sd.items()))}, tmp_path / "single_gpu.weights")
    assert main(["convert", str(tmp_path / "single_gpu.weights"), str(tmp_path / "fixed.weights"),
                 "model=debug"]) == 0
    fixed = torch.load(tmp_path / "fixed.weights", weights_only=True)
    assert list(fixed) == list(original_sd) and all(torch.equal(fixed[k], original_sd[k]) for k in fixed)
    assert "stripped prefix 'policy.'" in capsys.readouterr().out

    assert main(["inspect", str(tmp_path / "single_gpu.weights")]) == 0
    out = capsys.readouterr().out
    assert "104 tensors" in out and "prefix 'policy.'" in out and "matching presets: ['debug']" in out

    assert main(["convert", str(tmp_path / "single_gpu.weights"), str(tmp_path / "x.weights"),
                 f"model={fixtures_dir / 'policy' / 'bilstm.model'}"]) == 2
    assert "wrong model= preset" in capsys.readouterr().err and not (tmp_path / "x.weights").exists()


def test_cli_write_model(tmp_path):
    from steve1_ray.models.formats import main

    assert main(["write-model", "2x", str(tmp_path / "2x.model")]) == 0
    assert read_model_file(tmp_path / "2x.model") == PolicyConfig.preset("2x")
