"""CFG agent: guided log-probs, batched vs alone vs the original two-pass computation, sampling, resize."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from steve1_ray import agent as A
from steve1_ray.actions import env_to_policy
from steve1_ray.models.policy import build_policy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return build_policy("debug").eval()


def _obs(rng, n, shape=(360, 640, 3)):
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def test_resize_pov_matches_cv2_and_skips_128():
    rng = np.random.default_rng(0)
    pov = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    out = A.resize_pov(pov)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.resize(pov, (128, 128), interpolation=cv2.INTER_LINEAR))
    small = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    np.testing.assert_array_equal(A.resize_pov(small), small)
    with pytest.raises(ValueError, match="RGB"):
        A.resize_pov(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        A.resize_pov(np.zeros((10, 10, 3), np.float32))


def test_guided_logits_formula():
    c = torch.log_softmax(torch.randn(3, 7), -1)
    u = torch.log_softmax(torch.randn(3, 7), -1)
    s = [0.0, 6.0, -1.5]
    out = A.guided_logits(c, u, s)
    for i, si in enumerate(s):
        torch.testing.assert_close(out[i], (1 + si) * c[i] - si * u[i])
    torch.testing.assert_close(A.guided_logits(c, u, [0.0, 0.0, 0.0]), c)


def _film_policy():
    """`fovea_film` with its FiLM layers made non-zero, so that the image features depend on the row's goal."""
    torch.manual_seed(0)
    policy = build_policy("fovea_film").eval()
    with torch.no_grad():
        for cnn in (policy.net.img_process.cnn, policy.net.img_process.fovea.cnn):
            cnn.film.weight.normal_(0, 0.05), cnn.film.bias.normal_(0, 0.05)
    return policy


@pytest.mark.parametrize("which", ["debug", "fovea_film"])
def test_batched_equals_alone_equals_two_pass(policy, which):
    """Many streams with different scales in one forward == each alone == two batch-1 forwards per step (a
    `goal_film` policy, whose image features depend on the goal, shares each frame's convolutions between its rows
    and runs the FiLM per row)."""
    if which == "fovea_film":
        policy = _film_policy()
    assert A._can_share_frames(policy)
    atol = 5e-5 if which == "fovea_film" else 2e-5
    rng = np.random.default_rng(1)
    scales = [6.0, 0.0, None, 3.0, 7.5]
    goals = [rng.normal(size=512).astype(np.float32) for _ in scales]
    batched = [A.new_stream(policy, g, s, seed=i) for i, (g, s) in enumerate(zip(goals, scales))]
    alone = [A.new_stream(policy, g, s, seed=i) for i, (g, s) in enumerate(zip(goals, scales))]
    two_pass = [A.new_stream(policy, g, s, seed=i) for i, (g, s) in enumerate(zip(goals, scales))]
    n_diff = 0
    for t in range(5):
        obs = _obs(rng, len(scales))
        acts_b, logits_b = A.act_batch(policy, batched, obs, return_logits=True)
        for i in range(len(scales)):
            act_a, logits_a = A.act_batch(policy, [alone[i]], [obs[i]], return_logits=True)
            act_t, logits_t = A.two_pass_step(policy, two_pass[i], obs[i], return_logits=True)
            for h in A.HEADS:  # float32 sums in another order (batch sizes); FiLM's extra products: 5e-5
                torch.testing.assert_close(logits_b[h][i], logits_a[h][0], atol=atol, rtol=1e-5)
                torch.testing.assert_close(logits_b[h][i], logits_t[h][0], atol=atol, rtol=1e-5)
            assert batched[i].last == alone[i].last == two_pass[i].last
            for k in acts_b[i]:
                np.testing.assert_array_equal(acts_b[i][k], act_t[k])
            n_diff += int(batched[i].last != batched[0].last)
    assert n_diff > 0  # the streams really differ (goals, scales, seeds)
    assert all(s.steps == 5 for s in batched)


def test_guidance_changes_the_distribution(policy):
    rng = np.random.default_rng(2)
    goal = rng.normal(size=512).astype(np.float32) * 5
    obs = _obs(rng, 1)
    _, l0 = A.act_batch(policy, [A.new_stream(policy, goal, 0.0, seed=0)], obs, return_logits=True)
    _, l6 = A.act_batch(policy, [A.new_stream(policy, goal, 6.0, seed=0)], obs, return_logits=True)
    assert not torch.allclose(l0["buttons"], l6["buttons"])
    # scale 0 == the plain conditional log-probs of one stream without guidance
    _, lnone = A.act_batch(policy, [A.new_stream(policy, goal, None, seed=0)], obs, return_logits=True)
    torch.testing.assert_close(l0["buttons"], lnone["buttons"], atol=2e-5, rtol=1e-5)


def test_agent_reset_replays_and_actions_are_valid(policy):
    rng = np.random.default_rng(3)
    goal = rng.normal(size=512).astype(np.float32)
    obs = _obs(rng, 6)
    agent = A.Steve1Agent(policy, cond_scale=6.0, seed=11)
    first = [agent.act(o, goal) for o in obs]
    agent.reset()
    second = [agent.act(o, goal) for o in obs]
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    act = first[0]
    assert act["camera"].shape == (2,) and np.all(np.abs(act["camera"]) <= 10)
    assert act["ESC"] == 0 and set(act) >= {"attack", "forward", "hotbar.9", "camera"}
    buttons, camera = env_to_policy({k: np.asarray(v) for k, v in act.items()})
    assert 0 <= int(buttons) < 8641 and 0 <= int(camera) < 121
    other = A.Steve1Agent(policy, cond_scale=6.0, seed=12)
    lasts = []
    for o in obs:
        other.act(o, goal)
        lasts.append(other.stream.last)
    agent.reset()
    assert lasts != [(agent.act(o, goal), agent.stream.last)[1] for o in obs]  # another seed, other actions


def test_deterministic_is_argmax(policy):
    rng = np.random.default_rng(4)
    goal = rng.normal(size=512).astype(np.float32)
    st = A.new_stream(policy, goal, 6.0, deterministic=True)
    _, logits = A.act_batch(policy, [st], _obs(rng, 1), return_logits=True)
    assert st.last == {"buttons": int(logits["buttons"][0].argmax()), "camera": int(logits["camera"][0].argmax())}


def test_gumbel_sampling_follows_the_distribution():
    gen, _ = A.make_generator(0)
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    counts = np.bincount([int((logits + A.gumbel_noise(3, gen)).argmax()) for _ in range(4000)], minlength=3)
    np.testing.assert_allclose(counts / 4000, [0.7, 0.2, 0.1], atol=0.03)


def test_bad_goal_and_scale_are_named(policy):
    with pytest.raises(ValueError, match="expects 512"):
        A.new_stream(policy, np.zeros(10, np.float32), 6.0)
    with pytest.raises(ValueError, match="NaN"):
        A.new_stream(policy, np.full(512, np.nan, np.float32), 6.0)
    with pytest.raises(ValueError, match="cond_scale"):
        A.new_stream(policy, np.zeros(512, np.float32), float("inf"))


def _readme_block(heading: str) -> str:
    """The first ```python block under a README heading."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_in_process_example_runs_as_written():
    """README "Acting in this process" (the same code as Steve1Agent's docstring), run as written: the released
    world models load, the prompt becomes the goal the server would compute, 20 guided steps play the world, and
    the same reset plays the same episode again."""
    import inspect
    import textwrap

    import steve1_ray

    code = _readme_block("## Acting in this process")
    doc = inspect.getdoc(A.Steve1Agent)
    example = doc.split("\n\n", 1)[1].split("\n\npolicy:", 1)[0]  # the indented block after the first paragraph
    assert textwrap.dedent(example) + "\n" == code, "the docstring's example differs from the README's"
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    agent, env = ns["agent"], ns["env"]
    assert ns["Steve1Agent"] is A.Steve1Agent is steve1_ray.Steve1Agent
    assert agent.stream.steps == 20 and agent.stream.cond_scale == 6.0 and agent.stream.n_rows == 2
    np.testing.assert_array_equal(agent.goal_embed.numpy(),
                                  A.text_goal(agent.mineclip, agent.prior, "chop a tree", prior_seed=0))
    assert not np.array_equal(agent.goal("chop a tree", prior_seed=1), agent.goal_embed.numpy())
    first = agent.stream.last

    def replay():
        obs = env.reset(seed=1)
        agent.reset(prompt="chop a tree", cond_scale=6.0, seed=0)
        for _ in range(20):
            obs, *_ = env.step(agent.act(obs["pov"]))
        return agent.stream.last, obs["pov"]

    (last_a, pov_a), (last_b, pov_b) = replay(), replay()
    assert last_a == last_b == first
    np.testing.assert_array_equal(pov_a, pov_b)


def test_agent_without_a_goal_or_text_encoder_names_the_fix(policy):
    agent = A.Steve1Agent(policy, cond_scale=6.0, seed=0)
    pov = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"reset\(prompt=...\)"):
        agent.act(pov)
    with pytest.raises(ValueError, match="no text encoder"):
        agent.reset(prompt="chop a tree")
    with pytest.raises(ValueError, match="not both"):
        agent.reset(prompt="chop a tree", goal_embed=np.zeros(512, np.float32))
    goal = np.random.default_rng(0).normal(size=512).astype(np.float32)
    agent.reset(goal_embed=goal, cond_scale=None)
    agent.act(pov)
    assert agent.stream.n_rows == 1 and agent.stream.steps == 1
    agent.act(pov, goal_embed=-goal)  # a new goal mid-episode, kept for later steps
    np.testing.assert_array_equal(agent.goal_embed.numpy(), -goal)


def test_bf16_precision_is_opt_in_close_to_fp32_and_keeps_a_float32_state():
    """`set_precision(policy, "bf16")`: the forward runs under bfloat16 autocast, the state stays float32 (so
    sessions of both kinds batch and sync alike), log-probs stay near fp32's; fp32 is the default and exact."""
    import copy

    torch.manual_seed(0)
    low = build_policy("debug").eval()
    ref = copy.deepcopy(low)
    assert getattr(ref, "steve1_precision", "fp32") == "fp32"
    A.set_precision(low, "bf16")
    rng = np.random.default_rng(3)
    goal = rng.normal(size=512).astype(np.float32)
    a, b = A.new_stream(low, goal, 6.0, seed=0), A.new_stream(ref, goal, 6.0, seed=0)
    worst = 0.0
    for _ in range(4):
        obs = _obs(rng, 1)
        _, logits_low = A.act_batch(low, [a], obs, return_logits=True)
        _, logits_ref = A.act_batch(ref, [b], obs, return_logits=True)
        assert all(t.dtype == torch.float32 for t in a.state if t.is_floating_point())
        for h in A.HEADS:
            assert logits_low[h].dtype == torch.float32
            worst = max(worst, float((logits_low[h] - logits_ref[h]).abs().max()))
        a.state = [t.clone() for t in b.state]  # teacher-forced: the same memory each step
    assert 0 < worst < 1.0, worst  # bf16 really ran, and stayed near fp32 (guided logits at scale 6)
    with pytest.raises(ValueError, match="precision='fp16': choose one of fp32, bf16"):
        A.set_precision(low, "fp16")


def test_a_batch_steps_on_its_own_state_without_copies_and_gives_the_same_actions(policy):
    """Streams that step together again reuse their last batch's state as it is (views, no concatenation);
    the result equals copying every step, whatever the order; a stream leaving the batch gets its own rows."""
    rng = np.random.default_rng(5)
    goals = [rng.normal(size=512).astype(np.float32) for _ in range(3)]
    scales = [6.0, None, 2.0]
    reused = [A.new_stream(policy, g, s, seed=i) for i, (g, s) in enumerate(zip(goals, scales))]
    copied = [A.new_stream(policy, g, s, seed=i) for i, (g, s) in enumerate(zip(goals, scales))]
    for t in range(4):
        obs = _obs(rng, 3)
        order = [2, 0, 1] if t == 2 else [0, 1, 2]  # t=2 (and t=3, after it): another order copies
        _, a = A.act_batch(policy, [reused[i] for i in order], [obs[i] for i in order], return_logits=True)
        for st in copied:
            A.release_slab(st)  # the reference: every step concatenates fresh copies
        _, b = A.act_batch(policy, [copied[i] for i in order], [obs[i] for i in order], return_logits=True)
        for h in A.HEADS:
            torch.testing.assert_close(a[h], b[h], atol=1e-6, rtol=1e-6)
        assert [s.last for s in reused] == [s.last for s in copied]
    ptr = [s.state[0].untyped_storage().data_ptr() for s in reused]
    assert len(set(ptr)) == 1  # one batch's storage ...
    assert A.batch_order(reused[::-1]) == [2, 1, 0]  # ... in row order again whatever the arrival order
    A.release_slab(reused[1])
    assert reused[1].slab is None and reused[1].state[0].untyped_storage().data_ptr() != ptr[0]
    assert reused[1].state[0].shape[0] == 1  # only its own row(s)


def test_exported_state_is_contiguous_so_pickle_passes_it_out_of_band(policy):
    """The state a PolicyServer sends to the session store: a stream stepped in a batch holds strided views of the
    batch's state, which pickle (Ray's serializer) copies into the stream; the exported arrays travel as
    out-of-band buffers (zero-copy in Ray's object store), with the same values."""
    import pickle

    rng = np.random.default_rng(0)
    goal = rng.normal(size=A.policy_embed_dim(policy)).astype(np.float32)
    streams = [A.new_stream(policy, goal, 6.0, seed=i) for i in range(3)]
    for _ in range(2):
        A.act_batch(policy, streams, _obs(rng, 3, (128, 128, 3)))
    raw = [t.detach().cpu().numpy() for t in streams[1].state]
    assert not all(a.flags.c_contiguous for a in raw)  # why it matters: the batch's rows are strided views
    for stream in streams:
        out = A.exported_state(stream)
        assert all(a.flags.c_contiguous for a in out)
        for a, t in zip(out, stream.state):
            np.testing.assert_array_equal(a, t.numpy())
        buffers = []
        data = pickle.dumps(out, protocol=5, buffer_callback=buffers.append)
        big = [a for a in out if a.nbytes > 0]
        assert len(buffers) == len(big) and len(data) < 4096 + 200 * len(out)  # no array bytes in band
    in_band = pickle.dumps(raw, protocol=5, buffer_callback=lambda b: None)
    assert len(in_band) > sum(a.nbytes for a in raw if not a.flags.c_contiguous)  # today's copy, measured
