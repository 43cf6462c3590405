"""Action space: bit parity with VPT's ActionTransformer + CameraHierarchicalMapping, batching, torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from steve1_ray import actions as A


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return dict(np.load(fixtures_dir / "actions" / "vpt_golden.npz"))


def _env_dict(golden, camera_key):
    keys = [str(k) for k in golden["env_keys"]]
    acts = {k: golden["env_buttons"][:, i] for i, k in enumerate(keys)}
    acts["camera"] = golden[camera_key]
    return acts


def test_constants():
    assert len(A.BUTTONS_ALL) == 20 and A.BUTTONS_ALL[10] == "inventory"
    assert (A.N_BUTTONS, A.N_CAMERA, A.NULL_BUTTON, A.NULL_CAMERA) == (8641, 121, 0, 60)
    assert A.ENV_KEYS[-1] == "camera" and len(set(A.ENV_KEYS)) == 24
    assert set(A.BUTTONS_ALL) | set(A.UNUSED_BUTTONS) == set(A.ENV_KEYS[:-1])
    assert A.BUTTON_IDX_TO_FACTORED.shape == (8641, 20)


def test_button_names_match_original(golden):
    assert tuple(str(b) for b in golden["buttons_all"]) == A.BUTTONS_ALL


@pytest.mark.parametrize("suffix", ["f64", "f32"])
def test_env_to_policy_bit_exact(golden, suffix):
    acts = _env_dict(golden, f"env_camera_{suffix}")
    bins = A.discretize_camera(acts["camera"])
    np.testing.assert_array_equal(bins, golden[f"camera_bins_{suffix}"])
    buttons, camera = A.env_to_policy(acts)
    assert buttons.dtype == np.int64 and buttons.shape == (600,)
    np.testing.assert_array_equal(buttons, golden[f"joint_buttons_{suffix}"])
    np.testing.assert_array_equal(camera, golden[f"joint_camera_{suffix}"])
    np.testing.assert_array_equal(A.is_null_env_action(acts), golden[f"null_{suffix}"])


def test_camera_dtype_matters_like_the_original(golden):
    # The fixture has ties where float32 and float64 inputs land in different bins.
    assert (golden["camera_bins_f32"] != golden["camera_bins_f64"]).any()


def test_policy_to_env_bit_exact(golden):
    env = A.policy_to_env(golden["back_buttons_in"], golden["back_camera_in"])
    assert list(env) == list(A.ENV_KEYS)
    got = np.stack([env[k] for k in A.BUTTONS_ALL], -1)
    np.testing.assert_array_equal(got, golden["back_env_buttons"])
    np.testing.assert_array_equal(env["camera"], golden["back_env_camera"])  # bit-exact floats
    assert all((env[k] == 0).all() for k in A.UNUSED_BUTTONS)
    fac, bins = A.joint_to_factored(golden["back_buttons_in"], golden["back_camera_in"])
    np.testing.assert_array_equal(fac, golden["back_factored"])
    np.testing.assert_array_equal(bins, golden["back_camera_bins"])


def test_inventory_quirk():
    # 8640 keeps the camera head's bins on the way back; any other camera-off combo forces null.
    env = A.policy_to_env(np.array([8640, 0]), np.array([0, 0]))
    np.testing.assert_array_equal(env["camera"], [[-10.0, -10.0], [0.0, 0.0]])
    assert env["inventory"].tolist() == [1, 0]
    # Inventory pressed on the way in drops everything else and forces camera 60.
    b, c = A.env_to_policy({"inventory": np.array([1]), "attack": np.array([1]),
                            "camera": np.array([[5.0, -5.0]])})
    assert (b.item(), c.item()) == (8640, 60)


def test_group_rules():
    def joint(**pressed):
        act = {k: np.array(v) for k, v in pressed.items()}
        return int(A.env_to_policy(act)[0])
    fwd = joint(forward=1)
    assert joint(forward=1, back=1) == 0 and fwd != 0
    assert joint(left=1, right=1) == 0
    assert joint(sneak=1, sprint=1) == joint(sneak=1) != joint(sprint=1)
    assert joint(**{"hotbar.2": 1, "hotbar.7": 1}) == joint(**{"hotbar.7": 1})
    # Round trip of every joint index through env and back (camera on => non-null camera bin).
    idx = np.arange(A.N_BUTTONS)
    cam = np.where(A.BUTTON_IDX_TO_CAMERA_OFF, A.NULL_CAMERA, 0)
    cam[A.INVENTORY_BUTTON] = A.NULL_CAMERA
    b, c = A.env_to_policy(A.policy_to_env(idx, cam))
    np.testing.assert_array_equal(b, idx)
    np.testing.assert_array_equal(c, cam)


def test_leading_dims_and_torch(golden):
    acts = _env_dict(golden, "env_camera_f64")
    bt = {k: v[:594].reshape(6, 99, *v.shape[1:]) for k, v in acts.items()}
    b, c = A.env_to_policy(bt)
    assert b.shape == c.shape == (6, 99)
    np.testing.assert_array_equal(b.reshape(-1), golden["joint_buttons_f64"][:594])
    tb, tc = A.env_to_policy({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bt.items()})
    assert isinstance(tb, torch.Tensor) and tb.dtype == torch.int64
    np.testing.assert_array_equal(tb.numpy(), b)
    np.testing.assert_array_equal(tc.numpy(), c)
    env = A.policy_to_env(tb, tc)
    assert isinstance(env["camera"], torch.Tensor) and env["camera"].shape == (6, 99, 2)
    assert isinstance(A.discretize_camera(torch.zeros(3, 2)), torch.Tensor)
    np.testing.assert_array_equal(A.undiscretize_camera(torch.tensor([5, 10])).numpy(), [0.0, 10.0])


def test_noop_and_missing_keys():
    assert A.env_to_policy(A.NOOP_ENV_ACTION) == (0, 60)
    noop = A.noop_action((2, 3))
    assert noop["camera"].shape == (2, 3, 2) and noop["attack"].shape == (2, 3)
    b, c = A.env_to_policy(noop)
    assert (b == 0).all() and (c == 60).all()
    assert A.is_null_env_action(noop).all()
    only_cam = {"camera": np.array([[0.0, 3.0]])}
    assert A.env_to_policy(only_cam)[1].item() == 5 * 11 + 8
    assert not A.is_null_env_action(only_cam).any()
    assert A.is_null_env_action({"ESC": np.array(1), "camera": np.zeros(2)})  # invisible to the policy


def test_bad_input_errors():
    with pytest.raises(ValueError, match="NaN"):
        A.env_to_policy({"camera": np.array([[np.nan, 0.0]])})
    with pytest.raises(ValueError, match="leading shape"):
        A.env_to_policy({"camera": np.zeros((4, 2)), "attack": np.zeros(3)})
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        A.env_to_policy({"camera": np.zeros(3)})
    with pytest.raises(ValueError, match="8640"):
        A.policy_to_env(np.array([8641]), np.array([0]))
    with pytest.raises(ValueError, match="120"):
        A.policy_to_env(np.array([0]), np.array([121]))
    with pytest.raises(ValueError, match="neither"):
        A.env_to_policy({})
