"""benchmarks/faced_probe.py: the linear probe finds a label that is in the features and not one that is not."""
import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location(
    "faced_probe", Path(__file__).resolve().parents[1] / "benchmarks" / "faced_probe.py")
fp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fp)


def test_probe_reads_a_linearly_encoded_label_and_not_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 800)
    train = np.arange(800) < 600
    noise = rng.normal(size=(800, 16))
    encoded = noise.copy()
    encoded[:, :4] += 3.0 * np.eye(4)[labels]  # the label is a direction in feature space
    got = fp.probe(encoded, labels, train, n_classes=4)
    assert got["accuracy"] > 0.9 and got["n_train"] == 600 and got["n_test"] == 200
    assert set(got["per_class"]) == {0, 1, 2, 3}
    chance = fp.probe(noise, labels, train, n_classes=4)
    assert chance["accuracy"] < 0.45 and chance["confusions"]


def test_collect_labels_every_frame_with_its_faced_tile():
    from steve1_ray.models.loading import load_policy_spec
    from steve1_ray.world.crafter_env import CrafterEnv

    env = CrafterEnv(zombie_rate=0.2, target_outline=True, tree_logs=4, area=(24, 24))
    frames, labels, episode = fp.collect(env, focuses=(None, "collect_wood"), steps=10)
    assert frames.shape == (20, 128, 128, 3) and frames.dtype == np.uint8
    assert list(episode) == [0] * 10 + [1] * 10 and set(labels) <= set(range(len(fp.TILES)))
    feats = fp.features(load_policy_spec("debug", None, seed=0), frames, batch=7)
    assert feats.shape == (20, 64) and np.isfinite(feats).all()


def test_do_by_tile_reads_the_policy_and_the_demonstrator_per_faced_tile():
    import torch

    from steve1_ray.models.loading import load_policy_spec
    from steve1_ray.world.crafter_env import CrafterEnv

    env = CrafterEnv(zombie_rate=0.2, target_outline=True, tree_logs=4, area=(24, 24))
    frames, labels, episode, did = fp.collect(env, focuses=fp.episode_focuses(2), steps=40, with_do=True)
    assert did.dtype == bool and len(did) == len(frames) == 80
    policy = load_policy_spec("debug", None, seed=0)
    got = fp.do_by_tile(policy, frames, labels, episode, did, chunk=16)
    assert sum(v["frames"] for v in got.values()) <= 80 and got
    for tile, v in got.items():
        t = fp.TILES.index(tile)
        assert v["demonstrator"] == round(float(did[labels == t].mean()), 3)
        assert 0.0 <= v["policy"] <= 1.0
    # a policy whose button head puts all its mass on `do` combinations says 1.0 at every tile
    acts, m = fp._sibling("guided_do").action_matrix()
    with torch.no_grad():
        head = policy.pi_head["buttons"].linear_layer
        head.weight.zero_()
        head.bias.copy_(torch.where(m[:, acts.index("do")] > 0, 0.0, -1e4))
    assert all(v["policy"] == 1.0 for v in fp.do_by_tile(policy, frames, labels, episode, did).values())
    assert fp.episode_focuses(10)[8:] == fp.EPISODES[:2]
