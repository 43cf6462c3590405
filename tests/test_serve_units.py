"""Serving pieces without Ray: session table (cap, idle expiry, ownership/epochs), input checks."""
from __future__ import annotations

import asyncio
import base64
import time

import cv2
import numpy as np
import pytest

from steve1_ray.serving.inputs import InputError, check_embedding, check_scale, decode_image, decode_pixels
from steve1_ray.serving.sessions import SessionTable


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_session_table_cap_expiry_and_errors():
    clock = Clock()
    table = SessionTable(max_sessions=2, ttl_s=10, clock=clock)
    a = table.create(np.zeros(4), 6.0, 1)["session"]["session_id"]
    b = table.create(np.zeros(4), 6.0, 2)["session"]["session_id"]
    full = table.create(np.zeros(4), 6.0, 3)
    assert full["http_status"] == 429 and "max_sessions=2" in full["error"]
    clock.t += 6
    assert table.get(a)["session"]["seed"] == 1  # touching a keeps it alive
    clock.t += 6
    gone = table.get(b)
    assert gone["http_status"] == 410 and "expired" in gone["error"]
    assert table.get("nope")["http_status"] == 404
    assert "session" in table.create(np.zeros(4), 6.0, 4)  # b's slot is free again
    assert table.delete(a) == {"deleted": a} and table.delete(a)["http_status"] == 404


def test_session_table_sync_owner_and_epoch():
    table = SessionTable(max_sessions=4, ttl_s=100, clock=Clock())
    sid = table.create(np.zeros(4), 6.0, 1)["session"]["session_id"]
    table.get(sid, owner="r1", with_state=True)
    state = [np.ones((2, 3), np.float32)]
    assert table.sync("r1", [{"session_id": sid, "epoch": 0, "steps": 3, "state": state,
                              "rng_state": np.zeros(5, np.uint8)}]) == []
    rec = table.get(sid, owner="r2", with_state=True)  # the session moved to r2 and gets the state
    assert rec["state_steps"] == 3 and np.array_equal(rec["state"][0], state[0])
    assert table.sync("r1", [{"session_id": sid, "epoch": 0, "steps": 4}]) == [(sid, 0)]  # r1 must drop it
    table.reset(sid, cond_scale=2.0)
    rec = table.get(sid, with_state=True)
    assert rec["epoch"] == 1 and rec["state"] is None and rec["session"]["cond_scale"] == 2.0
    assert table.sync("r2", [{"session_id": sid, "epoch": 0, "steps": 5}]) == [(sid, 0)]  # pre-reset copy


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_decode_image_and_pixels():
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(decode_image(_b64(png.tobytes()), 10_000), img)
    np.testing.assert_array_equal(decode_image("data:image/png;base64," + _b64(png.tobytes()), 10_000), img)
    grey = cv2.imencode(".png", img[..., 0])[1]
    assert decode_image(_b64(grey.tobytes()), 10_000).shape == (20, 30, 3)
    with pytest.raises(InputError) as e:
        decode_image("%%%", 10_000)
    assert e.value.status == 400 and "base64" in e.value.message
    with pytest.raises(InputError) as e:
        decode_image(_b64(b"GIF89a nonsense"), 10_000)
    assert e.value.status == 400
    with pytest.raises(InputError) as e:
        decode_image(_b64(png.tobytes()), 100)
    assert e.value.status == 413 and "downscale" in e.value.message
    np.testing.assert_array_equal(decode_pixels(_b64(img.tobytes()), [20, 30, 3], 10_000), img)
    with pytest.raises(InputError, match="needs 1800"):
        decode_pixels(_b64(img.tobytes()[:-1]), [20, 30, 3], 10_000)
    with pytest.raises(InputError, match=r"\[height, width, 3\]"):
        decode_pixels(_b64(img.tobytes()), [20, 30], 10_000)


def test_client_frames_reach_the_server_as_sent():
    from steve1_ray.client import encode_frame

    img = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    raw = encode_frame(img)  # an array: lossless raw pixels
    np.testing.assert_array_equal(decode_pixels(raw["pixels"], raw["shape"], 10_000), img)
    png = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()
    assert set(encode_frame(png)) == {"image"}  # encoded bytes (a camera's JPEG): sent as they are
    np.testing.assert_array_equal(decode_image(encode_frame(png)["image"], 10_000), img)
    with pytest.raises(ValueError, match="height, width, 3"):
        encode_frame(img[..., 0])


def test_embedding_and_scale_checks():
    assert check_embedding([0.5] * 8, 8).dtype == np.float32
    with pytest.raises(InputError, match="has 3 values but this model expects 8"):
        check_embedding([1, 2, 3], 8)
    with pytest.raises(InputError, match="NaN"):
        check_embedding([float("nan")] * 8, 8)
    assert check_scale(6, 50) == 6.0
    for bad in (None, True, float("inf"), 51.0, "6"):
        with pytest.raises(InputError) as e:
            check_scale(bad, 50)
        assert e.value.status == 422


def test_the_page_s_slider_starts_at_the_server_s_default_scale():
    from steve1_ray.serving.page import index_html

    for default, shown in ((2.0, "2"), (6, "6"), (1.3, "1.5"), (50.0, "12"), (0.0, "0")):
        html = index_html(default)
        assert f'step="0.5" value="{shown}">' in html and f'<span id="scaleValue">{shown}</span>' in html, default
        assert "__SCALE__" not in html
    # it opens on the prompt the quick start plays, one every measurement so far follows (benchmarks/RESULTS.md)
    from steve1_ray.quickstart import QuickstartConfig

    assert f'id="prompt" type="text" value="{QuickstartConfig().prompt}"' in index_html(2.0)


def test_serve_config_yaml_builds_the_app_and_rejects_bad_args():
    from pathlib import Path

    from ray.serve.deployment import Application

    from steve1_ray.serving.app import app_builder
    from steve1_ray.serving.run import read_serve_yaml

    repo = Path(__file__).resolve().parent.parent
    args = read_serve_yaml(repo / "serve" / "config.yaml")
    assert args["host"] == "127.0.0.1" and args["port"] == 8000 and args["policy"] == "released"  # http_options too
    assert args["mineclip"] == args["prior"] == "released"  # the embedded world's released models
    # a session without a scale plays one the default evaluation measures on the embedded world (session 39)
    from steve1_ray.config import load_config, preset_path
    from steve1_ray.evaluate.run import EvalConfig

    measured = load_config(EvalConfig, [preset_path("eval", "crafter")], []).cond_scales
    assert args["default_cond_scale"] in measured and args["default_cond_scale"] > 0
    assert isinstance(app_builder(args), Application)
    with pytest.raises(ValueError, match="max_sesions"):
        app_builder({**args, "max_sesions": 3})  # typo: the error lists the known keys
    with pytest.raises(ValueError, match="world.backend"):
        app_builder({**args, "world": {"backend": "doom"}})
    # the world the released models were trained in
    assert args["world"] == {"backend": "crafter", "zombie_rate": 0.2, "tree_logs": 4}
    with pytest.raises(ValueError, match="zombie_rat"):
        app_builder({**args, "world": {"zombie_rat": 0.2}})  # typo: refused before any actor starts


def test_a_world_field_in_the_args_keeps_the_config_file_s_other_world_fields(tmp_path):
    """`app_builder({"config": file, "world": {...}})` laid the args over the file's config one level deep, so a
    world given in part lost the file's world (tree_logs 4 fell to 1)."""
    from steve1_ray.serving.app import app_builder

    (tmp_path / "serve.yaml").write_text("policy: debug\nworld: {zombie_rate: 0.5, tree_logs: 4}\n")
    app = app_builder({"config": str(tmp_path / "serve.yaml"), "world": {"cow_herds": 2}, "max_sessions": 7})
    d = app._bound_deployment.init_args[0]
    assert (d["policy"], d["max_sessions"]) == ("debug", 7)
    assert {k: d["world"][k] for k in ("zombie_rate", "tree_logs", "cow_herds")} == {
        "zombie_rate": 0.5, "tree_logs": 4, "cow_herds": 2}


def test_every_session_s_step_is_admitted_at_once_on_both_hops(tmp_path):
    """Serve's router parks a request that finds every replica at its max_ongoing_requests and retries it with
    back-off; with the Api capped at 128, 256 sessions got 7.3 actions/s instead of 81.1 (RESULTS, session 18).
    The bound app admits max_sessions steps at the Api and at the policy (each plus room for the other calls);
    a Serve config that caps them lower is refused by tests/test_deploy.py's check, shown here to fail."""
    import yaml

    from steve1_ray.serving.app import build_app
    from steve1_ray.serving.config import API_HEADROOM, ServeConfig
    from test_deploy import REPO, _check_serve_config

    api = build_app(ServeConfig(max_sessions=300, max_batch_size=16))._bound_deployment
    policy = api.init_args[1]._bound_deployment
    assert api.name == "Api" and api.max_ongoing_requests == 300 + API_HEADROOM
    assert policy.name == "PolicyServer" and policy.max_ongoing_requests == 300 + API_HEADROOM
    more = build_app(ServeConfig(max_sessions=300), api_options={"num_replicas": 3})._bound_deployment
    assert more.num_replicas == 3 and more.max_ongoing_requests == 300 + API_HEADROOM  # bench_serve --api-replicas
    small = build_app(ServeConfig(max_sessions=8, max_batch_size=64))._bound_deployment
    assert small.init_args[1]._bound_deployment.max_ongoing_requests == 64 + API_HEADROOM  # a batch, at least
    shipped = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    _check_serve_config(shipped, "serve/config.yaml")
    shipped["applications"][0]["deployments"][0]["max_ongoing_requests"] = 128  # the cap before session 18
    with pytest.raises(AssertionError, match="Api max_ongoing_requests 128 < 320"):
        _check_serve_config(shipped, "serve/config.yaml")


def test_the_serving_app_imports_without_pyav():
    """The H200 image the GPU check ran on has no PyAV; serving needs it only to write a rollout's video."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; sys.modules['av'] = None; import steve1_ray.serving.app, steve1_ray.serving.rollouts, "
            "steve1_ray.world.video; print('imported')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0 and "imported" in out.stdout, out.stderr[-3000:]


def test_serving_precision_reaches_the_policy_and_bad_ones_are_refused():
    from steve1_ray.config import ConfigError
    from steve1_ray.serving.config import ServeConfig
    from steve1_ray.serving.models import load_serving_policy

    assert load_serving_policy(ServeConfig(policy="debug")).steve1_precision == "fp32"
    assert load_serving_policy(ServeConfig(policy="debug", precision="bf16")).steve1_precision == "bf16"
    with pytest.raises(ConfigError, match="precision must be fp32 or bf16, got 'fp16'"):
        ServeConfig(precision="fp16")
    with pytest.raises(ConfigError, match=r"torch_threads must be in \[0, 1024\], got -1"):
        ServeConfig(torch_threads=-1)
    for bad in (float("nan"), float("inf"), 51.0, -60.0):  # a session without a scale, and the page, would take it
        with pytest.raises(ConfigError, match="default_cond_scale must be a finite number"):
            ServeConfig(default_cond_scale=bad)
    assert ServeConfig(default_cond_scale=-2.0).default_cond_scale == -2.0  # sessions accept |scale| <= max too


def test_the_batch_wait_follows_the_policy_step_within_its_bounds():
    from steve1_ray.config import ConfigError
    from steve1_ray.serving.config import ServeConfig
    from steve1_ray.serving.policy_server import adapted_batch_wait

    cfg = ServeConfig()  # 5 ms at least, 0.3 of a full batch (16 sessions) at the last step's time per session
    assert adapted_batch_wait(cfg, 0.002, 1) == pytest.approx(0.0096)  # debug: ~10 ms
    assert adapted_batch_wait(cfg, 0.0002, 4) == 0.005                 # the least wait
    assert adapted_batch_wait(cfg, 0.25, 4) == pytest.approx(0.3)      # 4 rows in 0.25 s: 16 in 1 s, 0.3 of it
    assert adapted_batch_wait(cfg, 0.5, 1) == 0.5                       # capped, however few rows stepped
    assert adapted_batch_wait(ServeConfig(batch_wait_fraction=0.0), 3.0, 16) == 0.005  # 0: fixed
    assert adapted_batch_wait(ServeConfig(batch_wait_timeout_s=0.6), 3.0, 16) == 0.6   # the least wins
    with pytest.raises(ConfigError, match=r"batch_wait_fraction must be in \[0, 1\], got 2"):
        ServeConfig(batch_wait_fraction=2)
    with pytest.raises(ConfigError, match="max_batch_wait_s must be >= 0, got -1"):
        ServeConfig(max_batch_wait_s=-1)


def test_a_batch_is_a_group_of_the_recently_active_and_waiting_sessions():
    from steve1_ray.serving.config import ServeConfig
    from steve1_ray.serving.policy_server import expected_batch_size

    cfg = ServeConfig(max_batch_size=64, batch_groups=1)
    hot = {f"s{i}" for i in range(20)}
    lockstep = {f"s{i}" for i in range(16)}
    assert expected_batch_size(cfg, [], hot) == 64                        # nothing stepped yet: the configured size
    assert expected_batch_size(cfg, [lockstep, lockstep], hot) == 16      # 16 in lockstep: fire at 16, not wait
    assert expected_batch_size(cfg, [{"s0"}, {"s1", "s2"}], hot) == 3     # two groups out of phase merge
    assert expected_batch_size(cfg, [lockstep, {"s0"}], hot - {"s3"}) == 15  # a reset/deleted session is not awaited
    assert expected_batch_size(cfg, [{"gone"}], hot) == 64                # none of them hot any more
    assert expected_batch_size(ServeConfig(max_batch_size=8, batch_groups=1), [lockstep], hot) == 8  # at most max
    halves = ServeConfig(max_batch_size=64)                              # the default: two groups in turn
    assert expected_batch_size(halves, [set(list(lockstep)[:8]), set(list(lockstep)[8:])], hot) == 8
    assert expected_batch_size(halves, [{"s0"}, {"s1"}], hot) == 1        # two sessions: one each
    assert expected_batch_size(halves, [{"s0"}, {"s1"}], hot, waiting={f"s{i}" for i in range(2, 16)}) == 8
    assert expected_batch_size(halves, [], hot, waiting={"s0", "s1", "s2"}) == 2  # waiting sessions count at once
    assert expected_batch_size(ServeConfig(max_batch_size=64, batch_groups=3), [lockstep], hot) == 6
    # the rule is for CPU replicas; a GPU keeps full batches unless asked
    from steve1_ray.config import ConfigError
    from steve1_ray.serving.policy_server import follows_sessions

    assert follows_sessions(ServeConfig()) and not follows_sessions(ServeConfig(device="cuda"))
    assert follows_sessions(ServeConfig(device="cuda", batch_size_rule="sessions"))
    assert not follows_sessions(ServeConfig(batch_size_rule="fixed"))
    with pytest.raises(ConfigError, match="batch_size_rule must be auto, sessions or fixed, got 'big'"):
        ServeConfig(batch_size_rule="big")
    with pytest.raises(ConfigError, match=r"batch_groups must be in \[1, 64\], got 0"):
        ServeConfig(batch_groups=0)


def _queue(target: int, wait_s: float, step_s: float = 0.0, fail_on=None, gated: bool = False, short: bool = False):
    """A StepQueue whose step (a policy step) sleeps `step_s`, or with `gated` waits until the test releases it
    (`gates[i].set()` for batch i); it records each batch's requests and start time."""
    from steve1_ray.serving.policy_server import StepQueue

    batches, starts, gates = [], [], []

    async def run(requests):
        batches.append([r[0] for r in requests])
        starts.append(time.monotonic())
        if gated:
            gates.append(asyncio.Event())
            await gates[-1].wait()
        else:
            await asyncio.sleep(step_s)
        if fail_on is not None and fail_on in batches[-1]:
            raise RuntimeError("boom")
        return [f"answer {r[0]}" for r in requests][:-1 if short else None]

    return StepQueue(run, target, wait_s), batches, starts, gates


async def _until(cond, timeout=10.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        await asyncio.sleep(0.001)


def test_the_next_batch_takes_every_request_that_arrived_while_the_replica_stepped():
    """Serve's @serve.batch closed a batch 5 ms after its first request even while the replica was busy, so the
    requests arriving during a slow step were cut into small batches queued behind it (2x on 2 CPU cores: 3.5 of 16
    sessions per batch). A batch is formed when the replica is free to step it."""
    async def main():
        q, batches, _, gates = _queue(target=64, wait_s=0.005, gated=True)
        tasks = [asyncio.create_task(q.submit(0))]
        await _until(lambda: len(gates) == 1)           # the lone request's batch is stepping now
        tasks.append(asyncio.create_task(q.submit(1)))
        await asyncio.sleep(0.05)                       # ten times the wait: @serve.batch would close [1] here
        tasks += [asyncio.create_task(q.submit(i)) for i in range(2, 7)]
        await asyncio.sleep(0.02)
        gates[0].set()
        await _until(lambda: len(gates) == 2)
        gates[1].set()
        return batches, await asyncio.gather(*tasks)

    batches, answers = asyncio.run(main())
    assert batches == [[0], [1, 2, 3, 4, 5, 6]]
    assert answers == [f"answer {i}" for i in range(7)]


def test_a_batch_takes_at_most_its_target_and_a_short_one_waits_from_its_oldest_request():
    async def main():
        q, batches, starts, _ = _queue(target=4, wait_s=0.2, step_s=0.15)
        t0 = time.monotonic()
        await asyncio.gather(*[asyncio.create_task(q.submit(i)) for i in range(10)])
        lone, _, lone_starts, _ = _queue(target=4, wait_s=0.2)
        t1 = time.monotonic()
        await asyncio.gather(lone.submit("a"), lone.submit("b"))
        return batches, [t - t0 for t in starts], lone_starts[0] - t1

    batches, starts, lone = asyncio.run(main())
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # groups of the target, oldest first
    # the short batch's oldest request arrived at 0 and has waited its 0.2 s by the time the replica is free
    # (0.3 s): it runs at once, not 0.2 s after the replica freed
    assert 0.28 <= starts[2] < 0.45
    assert lone >= 0.19                                     # an idle replica does wait for company


def test_a_request_whose_caller_left_is_not_stepped_and_a_failed_batch_answers_all_of_its_requests():
    async def main():
        q, batches, _, gates = _queue(target=8, wait_s=0.01, fail_on=3, gated=True)
        busy = asyncio.create_task(q.submit(0))
        await _until(lambda: len(gates) == 1)
        gone = asyncio.create_task(q.submit(1))
        stays = asyncio.create_task(q.submit(2))
        await asyncio.sleep(0.01)
        gone.cancel()                                   # its client disconnected while it waited
        fails = [asyncio.create_task(q.submit(3)), asyncio.create_task(q.submit(4))]
        await asyncio.sleep(0.01)
        gates[0].set()
        await _until(lambda: len(gates) == 2)
        gates[1].set()
        results = await asyncio.gather(busy, stays, *fails, return_exceptions=True)
        after = asyncio.create_task(q.submit(5))        # the queue still serves after a failed batch
        await _until(lambda: len(gates) == 3)
        gates[2].set()
        return batches, results, gone.cancelled(), await after

    batches, results, cancelled, after = asyncio.run(main())
    assert cancelled and batches == [[0], [2, 3, 4], [5]]
    assert results[0] == "answer 0"
    assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in results[1:])  # its whole batch failed
    assert after == "answer 5"


def test_a_batch_answered_short_fails_every_request_and_a_cancelled_loop_leaves_nobody_waiting():
    async def short():
        q, _, _, _ = _queue(target=2, wait_s=0.01, short=True)
        return await asyncio.wait_for(asyncio.gather(q.submit(0), q.submit(1), return_exceptions=True), 5)

    results = asyncio.run(short())
    assert all(isinstance(r, RuntimeError) and "a batch of 2 requests got 1 answers" in str(r) for r in results)

    async def shutdown():
        q, _, _, gates = _queue(target=8, wait_s=0.01, gated=True)
        stepping = asyncio.create_task(q.submit(0))
        await _until(lambda: len(gates) == 1)
        queued = asyncio.create_task(q.submit(1))
        await asyncio.sleep(0.01)
        q._task.cancel()                                # the replica shuts down mid-step
        done, pending = await asyncio.wait([stepping, queued], timeout=5)
        return stepping.cancelled(), queued.cancelled(), pending

    stepping, queued, pending = asyncio.run(shutdown())
    assert stepping and queued and not pending          # both callers learn it; none hangs


def test_the_queue_counts_its_idle_and_filling_time_as_it_goes():
    """/info's `idle_s` and `fill_s` include the wait going on now, so a reading taken while the replica waits is
    right (a counter added only when the wait ends put a benchmark's idle seconds into the next window)."""
    async def main():
        q, _, _, _ = _queue(target=2, wait_s=0.1, step_s=0.05)
        await q.submit(0)                               # waits 0.1 s for company, steps alone
        t0 = time.monotonic()
        await asyncio.sleep(0.2)                        # idle now
        return q.stats, time.monotonic() - t0

    stats, idle = asyncio.run(main())
    assert 0.09 <= stats["fill_s"] < 0.5
    assert 0.18 <= stats["idle_s"] <= idle + 0.05      # counted while the idle wait is still going on
