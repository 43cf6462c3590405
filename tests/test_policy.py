"""Steve1Policy: golden parity with the original STEVE-1 code, state semantics, heads, presets."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from steve1_ray.models.formats import load_policy
from steve1_ray.models.policy import (N_BUTTONS, N_CAMERA, PolicyConfig, Steve1Policy, build_policy,
                                      cat_states, detach_state, logprob, sample, select_state)

GOLDEN = ["debug", "bilstm"]


def _golden(fixtures_dir, name):
    d = fixtures_dir / "policy"
    policy = load_policy(d / f"{name}.model", d / f"{name}.weights")
    return policy, np.load(d / f"{name}_golden.npz")


def _inputs(B=2, T=12, seed=0, embed_dim=512):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (B, T, 16, 16, 3), generator=g, dtype=torch.uint8)
    img = img.repeat_interleave(8, 2).repeat_interleave(8, 3)
    goal = torch.randn(B, T, embed_dim, generator=g)
    return img, goal, torch.zeros(B, T, dtype=torch.bool)


@pytest.fixture(scope="module")
def debug_policy():
    torch.manual_seed(0)
    return build_policy("debug").eval()


# ---------------------------------------------------------------- golden parity
@pytest.mark.parametrize("name", GOLDEN)
def test_matches_original_over_two_chunks(fixtures_dir, name):
    """Two consecutive chunks with carried state; chunk 2 has first[:,0]=True on row 1 and a
    (to be ignored) mid-chunk first on row 2. Log-probs, values and the final state match."""
    policy, g = _golden(fixtures_dir, name)
    B, T2 = g["first"].shape
    t = T2 // 2
    state = None
    with torch.no_grad():
        for c in range(2):
            sl = slice(c * t, (c + 1) * t)
            lp, state = policy(torch.from_numpy(g["img"][:, sl]), torch.from_numpy(g["goal_embed"][:, sl]),
                               torch.from_numpy(g["first"][:, sl]), state, return_value=True)
            for key in ("buttons", "camera", "value"):
                ref = torch.from_numpy(g[f"{key}_{c}"])
                assert lp[key].shape == ref.shape
                assert lp[key].dtype == torch.float32
                torch.testing.assert_close(lp[key], ref, atol=1e-5, rtol=0, msg=f"{name} chunk {c} {key}")
    names = sorted((k for k in g.files if k.startswith("state_")),
                   key=lambda k: (int(k.split("_")[1]), ["mask", "K", "V", "h", "c"].index(k.split("_")[2])))
    assert len(names) == len(state)
    for k, s in zip(names, state):
        if s.dtype == torch.bool:
            assert torch.equal(s, torch.from_numpy(g[k])), k
        else:
            torch.testing.assert_close(s, torch.from_numpy(g[k]), atol=1e-5, rtol=0, msg=k)


def test_golden_detects_wrong_first_handling(fixtures_dir):
    """The fixture is sensitive: ignoring row 1's episode start changes chunk 2 by far more than 1e-5."""
    policy, g = _golden(fixtures_dir, "debug")
    t = g["first"].shape[1] // 2
    first = torch.from_numpy(g["first"]).clone()
    first[1, t] = False
    with torch.no_grad():
        _, s = policy(torch.from_numpy(g["img"][:, :t]), torch.from_numpy(g["goal_embed"][:, :t]), first[:, :t])
        lp, _ = policy(torch.from_numpy(g["img"][:, t:]), torch.from_numpy(g["goal_embed"][:, t:]), first[:, t:], s)
    diff = (lp["buttons"] - torch.from_numpy(g["buttons_1"])).abs()
    assert diff[1].max() > 1e-3 and diff[0].max() < 1e-5


@pytest.mark.parametrize("name", GOLDEN)
def test_state_dict_keys_shapes_and_order_equal_original(fixtures_dir, name):
    d = fixtures_dir / "policy"
    original = torch.load(d / f"{name}.weights", weights_only=True)
    ours = load_policy(d / f"{name}.model").state_dict()
    assert list(ours) == list(original)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in original.items()}


def test_2x_preset_keys_and_size_on_meta_device():
    with torch.device("meta"):
        policy = build_policy("2x")
    sd = policy.state_dict()
    assert all(v.is_meta for v in sd.values())  # nothing allocated
    assert len(sd) == 136
    goal = 512 * 2048 + 2048
    assert sum(v.numel() for v in sd.values()) == 248_495_294 + goal
    assert list(sd)[-13:-9] == ["net.final_ln.weight", "net.final_ln.bias",
                                "net.mineclip_embed_linear.weight", "net.mineclip_embed_linear.bias"]
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    blk = "net.recurrent_layer.blocks.3.r.orc_block."
    assert shapes[blk + "b_nd"] == (10, 128) and shapes[blk + "r_layer.weight"] == (160, 2048)
    assert blk + "k_layer.bias" not in shapes and shapes[blk + "q_layer.bias"] == (2048,)
    assert shapes["net.img_process.cnn.dense.norm.weight"] == (65536,)
    assert shapes["net.img_process.cnn.stacks.1.firstconv.layer.weight"] == (256, 128, 3, 3)
    assert "net.img_process.cnn.stacks.1.firstconv.layer.bias" not in shapes
    assert shapes["net.img_process.cnn.stacks.0.firstconv.layer.bias"] == (128,)
    assert shapes["pi_head.buttons.linear_layer.weight"] == (N_BUTTONS, 2048)
    assert shapes["pi_head.camera.linear_layer.weight"] == (N_CAMERA, 2048)
    assert shapes["value_head.normalizer.debiasing_term"] == ()
    assert list(sd).index("pi_head.camera.linear_layer.weight") < list(sd).index("pi_head.buttons.linear_layer.weight")


@pytest.mark.parametrize("preset,hid,width", [("1x", 1024, 4), ("3x", 3072, 12), ("small", 128, 1)])
def test_other_presets_build_on_meta(preset, hid, width):
    with torch.device("meta"):
        policy = build_policy(preset)
    assert policy.net.final_ln.weight.shape == (hid,)
    assert policy.net.img_process.cnn.stacks[0].firstconv.layer.weight.shape[0] == 16 * width


# ---------------------------------------------------------------- state semantics
def test_streaming_one_frame_at_a_time_equals_one_chunk(debug_policy):
    """Clipped-causal attention + KV cache: feeding frames one by one gives the chunk's outputs."""
    img, goal, first = _inputs(B=2, T=12)
    first[:, 0] = True
    with torch.no_grad():
        lp_chunk, s_chunk = debug_policy(img, goal, first)
        state, outs = debug_policy.initial_state(2), []
        for i in range(12):
            lp, state = debug_policy(img[:, i:i + 1], goal[:, i:i + 1], first[:, i:i + 1], state)
            outs.append(lp["buttons"])
    torch.testing.assert_close(torch.cat(outs, 1), lp_chunk["buttons"], atol=1e-5, rtol=0)
    for a, b in zip(state, s_chunk):
        assert torch.equal(a, b) if a.dtype == torch.bool else torch.allclose(a, b, atol=1e-5)


def test_first_hides_memory_like_a_fresh_state(debug_policy):
    img, goal, first = _inputs(B=2, T=20)
    with torch.no_grad():
        _, state = debug_policy(img[:, :10], goal[:, :10], first[:, :10])
        reset = first[:, 10:].clone()
        reset[:, 0] = True
        lp_first, _ = debug_policy(img[:, 10:], goal[:, 10:], reset, state)
        lp_fresh, _ = debug_policy(img[:, 10:], goal[:, 10:], first[:, 10:], None)
        lp_carry, _ = debug_policy(img[:, 10:], goal[:, 10:], first[:, 10:], state)
    torch.testing.assert_close(lp_first["buttons"], lp_fresh["buttons"], atol=1e-5, rtol=0)
    assert (lp_carry["buttons"] - lp_fresh["buttons"]).abs().max() > 1e-4


def test_state_rows_select_and_cat(debug_policy):
    """Batch rows are independent: running rows separately and concatenating states == batched run."""
    img, goal, first = _inputs(B=3, T=5)
    with torch.no_grad():
        _, s_all = debug_policy(img, goal, first)
        parts = [debug_policy(img[i:i + 1], goal[i:i + 1], first[i:i + 1])[1] for i in range(3)]
        s_cat = cat_states(parts)
        lp_all, _ = debug_policy(img, goal, first, s_all)
        lp_cat, _ = debug_policy(img, goal, first, s_cat)
        lp_row, _ = debug_policy(img[2:3], goal[2:3], first[2:3], select_state(s_all, 2))
    assert all(s.shape[0] == 3 for s in s_all)
    torch.testing.assert_close(lp_all["buttons"], lp_cat["buttons"], atol=1e-5, rtol=0)
    torch.testing.assert_close(lp_row["buttons"], lp_all["buttons"][2:3], atol=1e-5, rtol=0)
    assert [s.shape[0] for s in select_state(s_all, [0, 2])] == [2] * len(s_all)


def test_initial_state_layout(debug_policy):
    state = debug_policy.initial_state(4)
    cfg = debug_policy.cfg
    assert len(state) == 3 * cfg.n_recurrence_layers
    mask, K, V = state[:3]
    assert mask.dtype == torch.bool and mask.shape == (4, cfg.maxlen) and not mask.any()
    assert K.shape == V.shape == (4, cfg.maxlen, cfg.hidsize)
    lstm = build_policy("debug", recurrence_type="multi_layer_lstm")
    assert [tuple(s.shape) for s in lstm.initial_state(4)] == [(4, 64)] * 4


@pytest.mark.parametrize("kind", ["multi_layer_lstm", "none"])
def test_other_recurrence_types_run(kind):
    policy = build_policy("debug", recurrence_type=kind).eval()
    img, goal, first = _inputs(B=2, T=4)
    with torch.no_grad():
        lp, state = policy(img, goal, first)
        lp2, _ = policy(img, goal, first, state)
    assert torch.isfinite(lp2["buttons"]).all()
    assert len(state) == (4 if kind != "none" else 0)


# ---------------------------------------------------------------- training features
def test_backward_and_activation_checkpointing_give_same_grads():
    torch.manual_seed(0)
    policy = build_policy("debug")
    img, goal, first = _inputs(B=2, T=6)
    actions = sample(policy(img, goal, first)[0], generator=torch.Generator().manual_seed(0))

    def grads(ckpt):
        policy.zero_grad()
        policy.set_activation_checkpointing(ckpt)
        lp, state = policy(img, goal, first, detach_state(policy.initial_state(2)))
        (-logprob(lp, actions["buttons"], actions["camera"]).sum(1).mean()).backward()
        return {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}

    g0, g1 = grads(False), grads(True)
    assert set(g0) == set(g1) and "net.recurrent_layer.blocks.0.r.orc_block.b_nd" in g0
    assert not any(n.startswith("value_head.normalizer") for n in g0)  # frozen statistics
    for n in g0:
        torch.testing.assert_close(g0[n], g1[n], atol=1e-6, rtol=1e-5, msg=n)


def test_bf16_autocast_close_to_fp32(debug_policy):
    img, goal, first = _inputs(B=2, T=6)
    with torch.no_grad():
        ref, _ = debug_policy(img, goal, first)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp, state = debug_policy(img, goal, first)
            lp2, _ = debug_policy(img, goal, first, state)
    assert lp["buttons"].dtype == torch.float32 and torch.isfinite(lp2["buttons"]).all()
    assert (lp["camera"].exp() - ref["camera"].exp()).abs().max() < 0.05
    # a policy cast to bf16 as a whole (no autocast) also runs; its state is bf16
    half = build_policy("debug").to(torch.bfloat16).eval()
    with torch.no_grad():
        lp, state = half(img, goal, first, return_value=True)
        lp, state = half(img, goal, first, state, return_value=True)
    assert lp["buttons"].dtype == torch.float32 and torch.isfinite(lp["value"]).all()
    assert state[1].dtype == torch.bfloat16


# ---------------------------------------------------------------- heads
def test_logprob_sums_both_heads():
    lp = {"buttons": torch.log_softmax(torch.randn(2, 3, N_BUTTONS), -1),
          "camera": torch.log_softmax(torch.randn(2, 3, N_CAMERA), -1)}
    b = torch.randint(0, N_BUTTONS, (2, 3))
    c = torch.randint(0, N_CAMERA, (2, 3))
    expect = lp["buttons"][0, 1, b[0, 1]] + lp["camera"][0, 1, c[0, 1]]
    out = logprob(lp, b, c)
    assert out.shape == (2, 3) and torch.isclose(out[0, 1], expect)


def test_sample_gumbel_matches_distribution_and_is_seeded():
    probs = torch.tensor([0.6, 0.3, 0.1])
    lp = {"buttons": probs.log().expand(20000, 1, 3), "camera": probs.log().expand(20000, 1, 3)}
    a = sample(lp, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(a["buttons"].flatten(), minlength=3).float() / 20000
    assert torch.allclose(freq, probs, atol=0.015)
    b = sample(lp, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a["camera"], b["camera"])
    det = sample(lp, deterministic=True)
    assert (det["buttons"] == 0).all() and det["buttons"].dtype == torch.int64


def test_temperature_divides_logits(debug_policy):
    img, goal, first = _inputs(B=1, T=2)
    hot = Steve1Policy(dataclasses.replace(debug_policy.cfg, temperature=1.0)).eval()
    hot.load_state_dict(debug_policy.state_dict())
    with torch.no_grad():
        a, _ = debug_policy(img, goal, first)
        b, _ = hot(img, goal, first)
    # log_softmax(z / 2) == log_softmax(log_softmax(z) / 2)
    torch.testing.assert_close(a["camera"], torch.log_softmax(b["camera"] / 2.0, -1), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- config and errors
def test_config_validation_quotes_bad_values():
    with pytest.raises(ValueError, match="recurrence_type='gru'"):
        PolicyConfig.preset("debug", recurrence_type="gru")
    with pytest.raises(ValueError, match="attention_heads=5.*hidsize=64"):
        PolicyConfig.preset("debug", attention_heads=5)
    with pytest.raises(ValueError, match="attention_memory_size=16.*timesteps=16"):
        PolicyConfig.preset("debug", attention_memory_size=16)
    with pytest.raises(ValueError, match="unknown policy preset '4x'"):
        PolicyConfig.preset("4x")
    with pytest.raises(ValueError, match="img_statistics='stats.npz'"):
        PolicyConfig(img_statistics="stats.npz")


def test_config_works_with_job_config_machinery():
    from steve1_ray.config import from_dict

    cfg = from_dict(PolicyConfig, {**dataclasses.asdict(PolicyConfig.preset("debug")), "embed_dim": 768})
    assert cfg.embed_dim == 768 and cfg.maxlen == 8
    policy = build_policy(cfg)
    assert policy.net.mineclip_embed_linear.weight.shape == (64, 768)
    img, goal, first = _inputs(B=1, T=2, embed_dim=768)
    assert policy(img, goal, first)[0]["buttons"].shape == (1, 2, N_BUTTONS)


def test_bad_inputs_name_the_fix(debug_policy):
    img, goal, first = _inputs(B=2, T=3)
    with pytest.raises(ValueError, match=r"uint8 \(B, T, 128, 128, 3\)"):
        debug_policy(img.float(), goal, first)
    with pytest.raises(ValueError, match="resize"):
        debug_policy(img[:, :, :64], goal, first)
    with pytest.raises(ValueError, match="embed_dim"):
        debug_policy(img, goal[..., :100], first)
    with pytest.raises(ValueError, match=r"initial_state\(2\)"):
        debug_policy(img, goal, first, debug_policy.initial_state(3))


def test_goal_none_is_the_zero_goal(debug_policy):
    img, goal, first = _inputs(B=1, T=3)
    with torch.no_grad():
        a, _ = debug_policy(img, None, first)
        b, _ = debug_policy(img, torch.zeros_like(goal), first)
    assert torch.equal(a["buttons"], b["buttons"])


def test_package_level_load_policy_forwards():
    import steve1_ray

    policy = steve1_ray.load_policy("debug")
    assert isinstance(policy, Steve1Policy) and not policy.training


def test_2x_preset_is_vpt_2x_model_kwargs():
    """The kwargs VPT's agent.py hard-codes for 2x (POLICY_KWARGS + PI_HEAD_KWARGS)."""
    vpt_2x = dict(attention_heads=16, attention_mask_style="clipped_causal", attention_memory_size=256,
                  diff_mlp_embedding=False, hidsize=2048, img_shape=[128, 128, 3], impala_chans=[16, 32, 32],
                  impala_kwargs={"post_pool_groups": 1}, impala_width=8,
                  init_norm_kwargs={"batch_norm": False, "group_norm_groups": 1}, n_recurrence_layers=4,
                  pointwise_ratio=4, pointwise_use_activation=False, recurrence_is_residual=True,
                  recurrence_type="transformer", timesteps=128, use_pointwise_layer=True, use_pre_lstm_ln=False)
    kwargs = PolicyConfig.preset("2x").to_model_kwargs()
    assert {k: kwargs[k] for k in vpt_2x} == vpt_2x
    assert kwargs["mineclip_embed_dim"] == 512 and PolicyConfig.preset("2x").temperature == 2.0
    assert PolicyConfig.preset("2x").maxlen == 128


def test_the_cnn_runs_in_frame_chunks_on_cpu_with_the_same_log_probs_and_grads():
    """ImpalaCNN.cpu_chunk (CPU_FRAME_CHUNK): on CPU, frames go through the CNN 8 at a time (a speed measure: the
    caches); log-probs and gradients are one pass's up to float rounding (oneDNN picks its convolution algorithm by
    batch size, as it does for any two batch sizes; the weight gradients are summed over the chunks)."""
    from steve1_ray.models.policy import CPU_FRAME_CHUNK

    assert CPU_FRAME_CHUNK == 8
    torch.manual_seed(0)
    policy = build_policy("debug")
    img, goal, first = _inputs(B=3, T=7)  # 21 frames: chunks of 8, 8 and 5
    actions = sample(policy(img, goal, first)[0], generator=torch.Generator().manual_seed(0))
    cnn = policy.net.img_process.cnn
    calls = []
    hook = cnn.stacks[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))

    def run(chunk, with_grad=True):
        cnn.cpu_chunk, cnn.chunk_with_grad = chunk, with_grad
        policy.zero_grad()
        lp, _ = policy(img, goal, first)
        (-logprob(lp, actions["buttons"], actions["camera"]).sum(1).mean()).backward()
        return lp, {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}

    (lp0, g0), (lp8, g8) = run(0), run(8)
    run(8, with_grad=False)  # chunk_with_grad=False: training keeps one pass
    with torch.no_grad():
        policy(img, goal, first)  # ... and inference still chunks
    hook.remove()
    assert calls == [21, 8, 8, 5, 21, 8, 8, 5]
    for h in ("buttons", "camera"):
        torch.testing.assert_close(lp8[h].detach(), lp0[h].detach(), atol=1e-4, rtol=1e-5)
    assert set(g8) == set(g0) and len(g0) > 10
    for n in g0:  # rounding in another order
        assert float((g8[n] - g0[n]).norm()) <= 1e-4 * float(g0[n].norm()) + 1e-8, n


def test_fovea_sees_the_centre_crop_and_only_it(tmp_path):
    """The `fovea` preset adds features of the frame's centre (48x32 of 128x128) to the whole frame's; its branch reads
    no pixel outside the crop, and a pixel inside it changes them. debug without it writes no fovea key."""
    from steve1_ray.models.formats import read_model_file, save_weights, write_model_file

    torch.manual_seed(0)
    policy = build_policy("fovea").eval()
    fovea = policy.net.img_process.fovea
    assert (fovea.y0, fovea.x0, fovea.h, fovea.w) == (40, 48, 48, 32)
    x = torch.rand(3, 128, 128, 3)
    outside, inside = x.clone(), x.clone()
    outside[:, :40] = 0.0; outside[:, 88:] = 1.0; outside[:, :, :48] = 0.5; outside[:, :, 80:] = 0.25  # noqa: E702
    inside[:, 60, 64] = 1.0 - inside[:, 60, 64]
    with torch.no_grad():
        base = fovea(x)
        assert torch.equal(fovea(outside), base)
        assert not torch.allclose(fovea(inside), base)
        whole = policy.net.img_process(x)
        assert torch.allclose(whole, policy.net.img_process.linear(policy.net.img_process.cnn(x)) + base)
    # the .model file carries the fovea, and the released layout does not mention it
    cfg = read_model_file(write_model_file(policy.cfg, tmp_path / "f.model"))
    assert cfg.fovea_shape == [48, 32] and cfg.fovea_chans == [16, 16]
    assert "fovea_shape" not in PolicyConfig.preset("debug").to_model_kwargs()
    assert "fovea_shape" not in PolicyConfig.preset("2x").to_model_kwargs()
    # its weights load strictly into the same architecture, and not into debug
    save_weights(policy, tmp_path / "f.weights")
    again = load_policy(tmp_path / "f.model", tmp_path / "f.weights")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in policy.state_dict().items())
    with pytest.raises(Exception, match="fovea"):
        load_policy("debug", tmp_path / "f.weights")


def test_goal_film_starts_as_the_plain_policy_and_lets_the_goal_change_the_image_features(tmp_path):
    """`fovea_film`: FiLM layers from the goal on both CNNs' last channels, zero at initialisation (so the policy
    computes what `fovea` with the same other weights computes); once trained, the image features depend on the
    goal. The `.model` file carries `goal_film`, the released layout does not mention it, and the weights load
    strictly only into a goal_film architecture."""
    from steve1_ray.models.formats import read_model_file, save_weights, write_model_file

    torch.manual_seed(0)
    film = build_policy("fovea_film").eval()
    keys = {k for k in film.state_dict() if ".film." in k}
    assert keys == {f"net.img_process.{p}cnn.film.{w}" for p in ("", "fovea.") for w in ("weight", "bias")}
    plain = build_policy("fovea").eval()
    plain.load_state_dict({k: v for k, v in film.state_dict().items() if k not in keys})
    img = torch.randint(0, 256, (2, 5, 128, 128, 3), dtype=torch.uint8)
    goal = torch.randn(2, 5, film.cfg.embed_dim)
    with torch.no_grad():
        a, b = film(img, goal, torch.ones(2, 5, dtype=torch.bool))[0], plain(img, goal, torch.ones(2, 5, dtype=torch.bool))[0]
        for h in ("buttons", "camera"):
            torch.testing.assert_close(a[h], b[h])
        x = torch.rand(3, 128, 128, 3)
        g1, g2 = torch.randn(3, film.cfg.embed_dim), torch.randn(3, film.cfg.embed_dim)
        assert torch.equal(film.net.img_process(x, g1), film.net.img_process(x, g2))  # zero FiLM: no effect yet
        for cnn in (film.net.img_process.cnn, film.net.img_process.fovea.cnn):
            cnn.film.weight.normal_(0, 0.05)
        assert not torch.allclose(film.net.img_process(x, g1), film.net.img_process(x, g2))
        assert not torch.allclose(film.net.img_process.fovea(x, g1), film.net.img_process.fovea(x, g2))
        # the CPU chunking splits the goals with the frames
        cnn = film.net.img_process.cnn
        whole = cnn._head(cnn._stacks(x), g1)
        cnn.cpu_chunk = 2
        torch.testing.assert_close(cnn(x, g1), whole)
        with pytest.raises(ValueError, match="goal per row"):
            cnn(x)
        # `rows`: the convolutions once per frame, FiLM and dense per row == the rows' frames through it whole
        rows = torch.tensor([2, 0, 2, 1, 0])
        g5 = torch.randn(5, film.cfg.embed_dim)
        for chunk in (0, 2):
            cnn.cpu_chunk = film.net.img_process.fovea.cnn.cpu_chunk = chunk
            torch.testing.assert_close(film.net.img_process(x, g5, rows=rows), film.net.img_process(x[rows], g5))
        with pytest.raises(ValueError, match="goal per row"):
            cnn(x, g1, rows=rows)  # a goal per frame, not per row
    cfg = read_model_file(write_model_file(film.cfg, tmp_path / "f.model"))
    assert cfg.goal_film is True and "goal_film" not in PolicyConfig.preset("fovea").to_model_kwargs()
    save_weights(film, tmp_path / "f.weights")
    again = load_policy(tmp_path / "f.model", tmp_path / "f.weights")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in film.state_dict().items())
    with pytest.raises(Exception, match="film"):
        load_policy("fovea", tmp_path / "f.weights")
    with pytest.raises(ValueError, match="goal_film"):
        PolicyConfig.preset("fovea", goal_film="yes")


def test_null_goal_axes_blinds_every_goal_layer_to_those_axes_and_keeps_the_zero_goal():
    """`null_goal_axes(U)`: the goal layer and both FiLMs stop reading the goal along U (g and g + Uᵀc act alike),
    still read it elsewhere, and the zero goal (the unconditioned agent) acts exactly as before."""
    torch.manual_seed(0)
    policy = build_policy("fovea_film").eval()
    assert set(policy.goal_layers()) == {"net.mineclip_embed_linear", "net.img_process.cnn.film",
                                         "net.img_process.fovea.cnn.film"}
    with torch.no_grad():
        for m in policy.goal_layers().values():
            m.weight.normal_(0, 0.1)
    d = policy.cfg.embed_dim
    u = torch.linalg.qr(torch.randn(d, 2))[0].T  # (2, D) orthonormal rows
    img = torch.randint(0, 256, (2, 4, 128, 128, 3), dtype=torch.uint8)
    first = torch.ones(2, 4, dtype=torch.bool)
    g = torch.randn(2, 4, d) * 3
    moved = g + (torch.randn(2, 4, 2) * 3) @ u
    other = g + torch.randn(2, 4, d)

    def act(goal):
        with torch.no_grad():
            return policy(img, goal, first)[0]["buttons"]

    zero = act(torch.zeros(2, 4, d))
    assert not torch.allclose(act(g), act(moved), atol=1e-4)  # before: the policy reads U
    policy.null_goal_axes(u)
    torch.testing.assert_close(act(g), act(moved), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(act(g), act(other), atol=1e-4)  # the rest of the goal still counts
    torch.testing.assert_close(act(torch.zeros(2, 4, d)), zero)
    for m in policy.goal_layers().values():
        assert float((m.weight.detach() @ u.T).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="goal axes must be"):
        policy.null_goal_axes(torch.randn(2, d + 1))
    with pytest.raises(ValueError, match="linearly independent"):
        policy.null_goal_axes(torch.stack([u[0], 2 * u[0]]))
    # any basis of the span gives the same projection
    again = build_policy("fovea_film").eval()
    again.load_state_dict(policy.state_dict())
    with torch.no_grad():
        for m in again.goal_layers().values():
            m.weight.normal_(0, 0.1)
    twin = build_policy("fovea_film").eval()
    twin.load_state_dict(again.state_dict())
    again.null_goal_axes(u)
    twin.null_goal_axes(torch.tensor([[3.0], [1.0]]) * u[0] + torch.tensor([[0.0], [2.0]]) * u[1])
    for (name, m), n in zip(again.goal_layers().items(), twin.goal_layers().values()):
        torch.testing.assert_close(m.weight, n.weight, msg=name)


@pytest.mark.parametrize("bad", [[48], [2, 32], [48, 200], [48, 32, 3]])
def test_fovea_shape_is_checked(bad):
    with pytest.raises(ValueError, match="fovea_shape"):
        PolicyConfig.preset("debug", fovea_shape=bad)
    with pytest.raises(ValueError, match="fovea_chans"):
        PolicyConfig.preset("fovea", fovea_chans=[16, 0])


@pytest.mark.parametrize("key,value", [("fovea_shape", "ab"), ("fovea_shape", 48), ("fovea_shape", [48, None]),
                                       ("fovea_chans", 16), ("fovea_chans", ["x"]), ("goal_film", "yes"),
                                       ("goal_film", 1), ("goal_film", None)])
def test_a_hostile_model_file_fovea_is_refused_by_name(tmp_path, key, value):
    """A `.model` file's fovea keys are data: wrong types give the field's ValueError, never a TypeError."""
    import pickle

    from steve1_ray.models.formats import read_model_file, write_model_file

    path = write_model_file(PolicyConfig.preset("fovea"), tmp_path / "f.model")
    d = pickle.loads(path.read_bytes())
    d["model"]["args"]["net"]["args"][key] = value
    path.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(ValueError, match=key):
        read_model_file(path)
