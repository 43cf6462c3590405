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
    assert fp.episode_focuses(5, (None, "eat_cow")) == (None, "eat_cow", None, "eat_cow", None)


def test_adjacent_side_names_the_one_side_a_thing_is_on_and_not_a_faced_or_doubled_one():
    from crafter import objects

    from steve1_ray.world.crafter_env import CrafterEnv

    env = CrafterEnv(tree_logs=4, max_steps=10, area=(24, 24))
    env.reset(seed=3)
    x, y = (int(v) for v in env.player.pos)
    for obj in [o for o in env.world.objects if isinstance(o, objects.Cow)]:
        env.world.remove(obj)
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        env.world[(x + dx, y + dy)] = "grass"
    env.player.facing = (0, 1)
    assert fp.adjacent_side(env, "cow") == -1 and fp.adjacent_side(env, "tree") == -1  # nothing beside
    env.world.add(objects.Cow(env.world, np.array([x - 1, y])))
    assert fp.adjacent_side(env, "cow") == fp.SIDES.index("left") and fp.adjacent_side(env, "tree") == -1
    env.world[(x, y - 1)] = "tree"
    assert fp.adjacent_side(env, "tree") == fp.SIDES.index("up")
    env.player.facing = (-1, 0)
    assert fp.adjacent_side(env, "cow") == -1  # faced: nothing to turn to
    env.player.facing = (0, 1)
    env.world[(x + 1, y)] = "tree"
    assert fp.adjacent_side(env, "tree") == -1  # two sides: no single answer


def test_side_probe_reads_the_side_from_what_encodes_it_and_skips_unlabelled_frames():
    rng = np.random.default_rng(1)
    n = 900
    side = rng.integers(-1, 4, n)  # -1: not beside, skipped
    episode = np.repeat(np.arange(9), 100)
    noise = rng.normal(size=(n, 12)).astype(np.float32)
    encoded = noise.copy()
    encoded[side >= 0, :4] += 3.0 * np.eye(4)[side[side >= 0]]
    got = fp.side_probe(noise, encoded, side, episode, n_train=6)
    assert got["frames"] == int((side >= 0).sum()) and got["test_frames"] == int((side[episode >= 6] >= 0).sum())
    assert got["pixels"] > 0.9 and got["features"] < 0.45 and 0.2 < got["majority"] < 0.4
    # the crop is the one the fovea policies read (their `Fovea`'s offsets), and a policy's own shape is honoured
    import torch

    from steve1_ray.models.loading import load_policy_spec

    fovea = load_policy_spec("fovea_film", None, seed=0).net.img_process.fovea
    frames = rng.integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    px = fp.fovea_pixels(frames)
    assert px.shape == (3, 48 * 32 * 3) and np.allclose(px[1, :3], frames[1, fovea.y0, fovea.x0] / 255.0)
    assert fp.fovea_pixels(frames, (8, 4)).shape == (3, 8 * 4 * 3)
    assert np.allclose(fp.fovea_pixels(frames, (8, 4))[2, :3], frames[2, 60, 62] / 255.0)


def test_collect_labels_adjacent_sides_when_asked():
    from steve1_ray.world.crafter_env import CrafterEnv

    env = CrafterEnv(zombie_rate=0.2, target_outline=True, tree_logs=4, area=(24, 24))
    frames, labels, episode, sides = fp.collect(env, focuses=(None, "collect_wood"), steps=60, adjacent=("tree",))
    assert set(sides) == {"tree"} and sides["tree"].shape == labels.shape and set(sides["tree"]) <= {-1, 0, 1, 2, 3}
    assert (sides["tree"] >= 0).any()  # the wood task walks up to trees
    assert (sides["tree"][labels == fp.TILES.index("tree")] == -1).all()  # facing a tree: no side to turn to
    assert len(fp.collect(env, focuses=(None,), steps=5)) == 3


def test_main_refuses_what_it_cannot_probe_before_loading_anything(capsys):
    import pytest

    for argv, match in ((["--adjacent", "other"], "cannot probe"), (["--adjacent", "grass,cow"], "cannot probe"),
                        (["--focuses", "none,eat_pizza"], "unknown goals")):
        with pytest.raises(SystemExit) as e:
            fp.main(["--policy", "/nonexistent/policy.model", *argv])
        assert e.value.code == 2 and match in capsys.readouterr().err
