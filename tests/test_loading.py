"""steve1_ray.models.loading: one way from what a user names (preset, original files, our checkpoint folder) to
models, shared by the data pipeline, training, serving and evaluation."""
from __future__ import annotations

import os
import time

import pytest
import torch

from steve1_ray.models.loading import (MODEL_NAME, WEIGHTS_NAME, checkpoint_files, latest_checkpoint,
                                       load_embedder, load_goal_models, load_policy_spec, load_prior, policy_files)


def _checkpoint(folder, seed=0):
    from steve1_ray.models.policy import build_policy
    from steve1_ray.train.checkpoint import save_model_dir

    torch.manual_seed(seed)
    policy = build_policy("debug")
    save_model_dir(policy, folder / "model")
    return policy


def test_a_checkpoint_folder_its_model_folder_and_files_load_the_same_policy(tmp_path):
    policy = _checkpoint(tmp_path / "checkpoint_000001")
    model, weights = checkpoint_files(tmp_path / "checkpoint_000001")
    assert (model.name, weights.name) == (MODEL_NAME, WEIGHTS_NAME)
    assert checkpoint_files(tmp_path / "checkpoint_000001" / "model") == (model, weights)
    for spec in (tmp_path / "checkpoint_000001", str(model)):
        loaded = load_policy_spec(spec, None if spec != str(model) else weights)
        assert not loaded.training
        for k, v in policy.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k]), k


def test_bad_names_say_what_would_work(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected policy.model and steve1.weights"):
        policy_files(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        policy_files("4x")
    with pytest.raises(FileNotFoundError, match="weights 'nope.weights' do not exist"):
        policy_files("debug", "nope.weights")
    with pytest.raises(FileNotFoundError, match="no checkpoint_"):
        latest_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="give MineCLIP's attn.pth"):
        load_embedder(tmp_path / "missing.pth")


def test_latest_checkpoint_is_the_newest(tmp_path):
    for i, name in enumerate(["checkpoint_000002", "checkpoint_000010", "checkpoint_000001"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (time.time() + i, time.time() + i))
    assert latest_checkpoint(tmp_path).name == "checkpoint_000001"


def test_random_goal_models_are_the_same_in_every_process_and_width_checked(tmp_path):
    """No checkpoint: seeded random models, so the dataset job's embeddings and the server's goals agree."""
    a, b = load_embedder(None, "debug"), load_embedder("debug")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    mineclip, prior = load_goal_models(None, None, preset="debug", embed_dim=96, random_prior=True)
    assert mineclip.embed_dim == 96 and prior.input_dim == 96
    assert load_goal_models("debug", None)[1] is None  # no prior and none asked for: goals are the text embeddings
    from steve1_ray.models.mineclip import save_mineclip
    from steve1_ray.models.prior import save_prior

    save_mineclip(mineclip, tmp_path / "m.pth")
    with pytest.raises(ValueError, match="embeds to 96 values but the policy expects 512"):
        load_embedder(tmp_path / "m.pth", embed_dim=512)
    save_prior(load_prior(None, 512, random_ok=True), tmp_path / "p.pt")
    with pytest.raises(ValueError, match="maps 512-value embeddings but the embedder gives 96"):
        load_goal_models(tmp_path / "m.pth", tmp_path / "p.pt")


def test_weights_without_the_goal_layer_act_with_a_zero_goal_layer(tmp_path):
    """A VPT-layout file (the released foundation) acts as trained whatever the goal: its goal layer is zero, not
    a fresh random init; a file with the goal layer keeps it."""
    from steve1_ray.models.formats import GOAL_KEYS, write_model_file

    policy = _checkpoint(tmp_path / "ck", seed=3)
    write_model_file(policy.cfg, tmp_path / "f.model")
    torch.save({k: v for k, v in policy.state_dict().items() if k not in GOAL_KEYS}, tmp_path / "f.weights")
    loaded = load_policy_spec(tmp_path / "f.model", tmp_path / "f.weights", seed=0)
    assert loaded.load_report.missing_goal_layer
    assert not loaded.net.mineclip_embed_linear.weight.any() and not loaded.net.mineclip_embed_linear.bias.any()
    img = torch.randint(0, 255, (1, 2, 128, 128, 3), dtype=torch.uint8)
    first = torch.zeros(1, 2, dtype=torch.bool)
    goal = torch.randn(1, 2, policy.cfg.embed_dim)
    a, _ = loaded(img, goal, first, loaded.initial_state(1))
    b, _ = loaded(img, None, first, loaded.initial_state(1))
    assert torch.equal(a["buttons"], b["buttons"])  # the goal changes nothing
    kept = load_policy_spec(tmp_path / "ck")
    assert torch.equal(kept.net.mineclip_embed_linear.weight, policy.net.mineclip_embed_linear.weight)


def test_a_checkpoint_and_goal_models_in_s3_load_as_local_ones(tmp_path, monkeypatch):
    """`s3://` names (moto's S3 server in this process): a checkpoint folder (only its model/ is copied), a prior,
    and a missing object named in the error."""
    import boto3
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    from steve1_ray.models import prior as prior_mod

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for k, v in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "k",
                     "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        boto3.client("s3").create_bucket(Bucket="steve1-loading")
        policy = _checkpoint(tmp_path / "checkpoint_000001")
        (tmp_path / "checkpoint_000001" / "training_state").mkdir()
        (tmp_path / "checkpoint_000001" / "training_state" / "optimizer.pt").write_bytes(b"x" * 1000)
        prior = prior_mod.TranslatorVAE(input_dim=16, hidden_dim=32, latent_dim=16)
        prior_mod.save_prior(prior, tmp_path / "prior.pt")
        fs = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http")
        pafs.copy_files(str(tmp_path / "checkpoint_000001"), "steve1-loading/runs/r/checkpoint_000001",
                        source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        pafs.copy_files(str(tmp_path / "prior.pt"), "steve1-loading/prior.pt",
                        source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)

        model, weights = checkpoint_files("s3://steve1-loading/runs/r/checkpoint_000001")
        assert (model.name, weights.name) == (MODEL_NAME, WEIGHTS_NAME)
        assert not (model.parent.parent / "training_state").exists()  # what serving needs, not the optimizer
        loaded = load_policy_spec("s3://steve1-loading/runs/r/checkpoint_000001")
        for k, v in policy.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k]), k
        got = load_prior("s3://steve1-loading/prior.pt", 16)
        for k, v in prior.state_dict().items():
            assert torch.equal(v, got.state_dict()[k]), k
        with pytest.raises(FileNotFoundError, match="s3://steve1-loading/nope.pt does not exist"):
            load_prior("s3://steve1-loading/nope.pt", 16)
        # a run folder, not a checkpoint: only its own files are fetched (never every checkpoint below it), and
        # the error names the URI the user gave
        with pytest.raises(FileNotFoundError, match="checkpoint s3://steve1-loading/runs/r: expected policy.model"):
            checkpoint_files("s3://steve1-loading/runs/r")
        with pytest.raises(ValueError, match="not a path or a storage URI"):
            checkpoint_files("nosuchscheme://bucket/x")
    finally:
        server.stop()


def test_copies_left_by_killed_processes_are_removed_and_live_ones_kept(tmp_path):
    """A process removes its remote copies at exit; one that was SIGKILLed (a replica, an OOM) cannot, so the
    next process that copies something removes the copies of processes that are gone."""
    import os
    import signal
    import subprocess
    import sys

    from steve1_ray.models.loading import COPY_PREFIX, remove_dead_copies

    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    dead = tmp_path / f"{COPY_PREFIX}{victim.pid}_abc"
    live = tmp_path / f"{COPY_PREFIX}{os.getppid()}_def"  # pytest's parent: alive
    mine = tmp_path / f"{COPY_PREFIX}{os.getpid()}_ghi"
    other = tmp_path / "steve1_remote_notapid"
    for d in (dead, live, mine, other):
        (d / "model").mkdir(parents=True)
        (d / "model" / "steve1.weights").write_bytes(b"w")
    assert remove_dead_copies(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and live.exists() and mine.exists() and other.exists()
