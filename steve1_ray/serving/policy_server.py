"""Serve deployments that hold models: `PolicyServer` (batched CFG steps, hot session state),
`SessionStore` (durable session records) and `GoalEmbedder` (prompt/clip -> goal embedding)."""
from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from ray import serve
from ray.serve.handle import DeploymentHandle

from steve1_ray import agent as A
from steve1_ray.config import from_dict
from steve1_ray.serving.config import ServeConfig
from steve1_ray.serving.sessions import SessionTable, error

log = logging.getLogger("ray.serve")

try:  # Ray 2.60: experimental session-affinity router (sticky by session id)
    from ray.serve.config import RequestRouterConfig

    STICKY = {"request_router_config": RequestRouterConfig(
        request_router_class="ray.serve.experimental.consistent_hash_router.ConsistentHashRouter")}
except Exception:  # pragma: no cover - older Ray: round-robin (sessions still recover via the store)
    STICKY = {}


LEASE_S = 10.0
"""A replica's hold on the sessions it stepped last: while it is in contact with the store within this time,
another replica gets 409 for a session whose latest state only it holds (state_sync_every > 1)."""


def json_action(action: dict) -> dict:
    """Env action dict (ints + camera array) -> JSON-ready dict (camera as [pitch, yaw] floats)."""
    out = {k: int(v) for k, v in action.items() if k != "camera"}
    out["camera"] = [float(x) for x in np.asarray(action["camera"]).reshape(-1)]
    return out


# ----------------------------------------------------------------------------------------- store

@serve.deployment(name="SessionStore", num_replicas=1, max_ongoing_requests=256,
                  ray_actor_options={"num_cpus": 0.05}, health_check_period_s=10, graceful_shutdown_timeout_s=5)
class SessionStore:
    """The one home of session records; survives policy replica restarts and moves. Single replica. Its methods
    are async on purpose: they run one at a time on the replica's event loop (Serve runs plain methods in a
    thread pool), so every check-then-change of the table is atomic."""

    def __init__(self, cfg: dict):
        c = from_dict(ServeConfig, cfg)
        self.table = SessionTable(c.max_sessions, c.session_ttl_s, max_per_client=c.max_sessions_per_key)

    async def create(self, goal_embed, cond_scale, seed, deterministic=False, prompt=None, client=None) -> dict:
        return self.table.create(goal_embed, cond_scale, seed, deterministic, prompt, client)

    async def get(self, session_id: str, owner: str | None = None, with_state: bool = False,
                  client: str | None = None) -> dict:
        return self.table.get(session_id, owner, with_state, client)

    async def sync(self, owner: str, updates: list, released: tuple = ()) -> list:
        return self.table.sync(owner, updates, released)

    async def claim(self, owner: str, items: list, lease_s: float = 10.0) -> dict:
        return self.table.claim(owner, items, lease_s)

    async def reset(self, session_id: str, cond_scale="keep", seed="keep", client: str | None = None) -> dict:
        return self.table.reset(session_id, cond_scale, seed, client)

    async def delete(self, session_id: str, client: str | None = None) -> dict:
        return self.table.delete(session_id, client)

    async def stats(self) -> dict:
        return self.table.stats()


# ----------------------------------------------------------------------------------------- goals

@serve.deployment(name="GoalEmbedder", max_ongoing_requests=32, ray_actor_options={"num_cpus": 0.1},
                  health_check_period_s=10, graceful_shutdown_timeout_s=5)
class GoalEmbedder:
    """Prompt -> MineCLIP text embedding -> prior sample (cached per prompt and prior seed); clip -> video embedding."""

    def __init__(self, cfg: dict, embed_dim: int | None = None):
        from steve1_ray.serving.models import load_goal_models

        self.cfg = from_dict(ServeConfig, cfg)
        self.mineclip, self.prior = load_goal_models(self.cfg, embed_dim)
        self.cache: collections.OrderedDict = collections.OrderedDict()

    def embed_text(self, prompt: str, prior_seed: int | None = 0) -> np.ndarray | dict:
        from steve1_ray.agent import text_goal

        if self.prior is None:
            return error(503, "text prompts need the prior, which is not available in this deployment "
                              "(steve1_ray.models.prior missing); send goal_embed or clip instead")

        key = (prompt, prior_seed)
        if prior_seed is not None and key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        goal = text_goal(self.mineclip, self.prior, prompt, prior_seed)
        if prior_seed is not None:
            self.cache[key] = goal
            while len(self.cache) > 4096:
                self.cache.popitem(last=False)
        return goal

    def embed_clip(self, frames: list) -> np.ndarray:
        from steve1_ray.serving.models import clip_goal

        return clip_goal(self.mineclip, frames)

    def info(self) -> dict:
        return {"embed_dim": int(self.mineclip.embed_dim), "cached_prompts": len(self.cache),
                "window": int(self.mineclip.window), "resolution": [int(r) for r in self.mineclip.cfg.resolution]}


# ----------------------------------------------------------------------------------------- policy

@dataclass
class _Hot:
    stream: A.AgentStream
    epoch: int
    last_used: float
    client: str | None = None  # who owns the session (auth.py); None: internal
    last_result: dict | None = None  # the answer of the latest step (an idempotent retry gets it again)


def adapted_batch_wait(cfg: ServeConfig, step_s: float, rows: int, target: int | None = None) -> float:
    """The next batch's wait: `batch_wait_fraction` of what the batch the replica expects (`target` sessions,
    default `max_batch_size`) would take at the last step's time per session, between `batch_wait_timeout_s` and
    `max_batch_wait_s` (the least wins if they cross). Per session, not per batch: a wait based on the last batch's
    time keeps small batches small (they step fast and keep the wait short). The wait only runs while fewer than
    `target` requests are there and the replica is free: it trades an idle replica for a fuller batch."""
    full_s = step_s / max(1, rows) * (target or cfg.max_batch_size)
    return max(cfg.batch_wait_timeout_s, min(cfg.max_batch_wait_s, cfg.batch_wait_fraction * full_s))


def follows_sessions(cfg: ServeConfig) -> bool:
    """Whether the batch size follows the sessions (`expected_batch_size`) or stays `max_batch_size`."""
    return cfg.batch_size_rule == "sessions" or (cfg.batch_size_rule == "auto" and not cfg.device.startswith("cuda"))


def expected_batch_size(cfg: ServeConfig, recent, hot, waiting=()) -> int:
    """How many requests make a batch under `batch_size_rule` `sessions`: the active sessions (those that stepped
    in the `recent` batches and are still `hot`, and those `waiting`) split into `batch_groups` groups, at most
    `max_batch_size`; before any batch, `max_batch_size`. A batch takes at most this many of the waiting requests,
    so the groups stay apart: with two, one group steps while the other's answers and next observations travel
    (2x on 2 CPU cores steps 8 sessions at 103 ms each against 120 ms at 16, and the round trip is hidden).
    Counting the waiting sessions lets groups that fell out of step merge back. A session that stops asking is
    counted for `len(recent)` more batches."""
    active = (set().union(*recent) & set(hot)) | set(waiting)
    if not active:
        return cfg.max_batch_size
    return max(1, min(cfg.max_batch_size, -(-len(active) // cfg.batch_groups)))


class StepQueue:
    """The PolicyServer's batches, formed when the replica is free to step them.

    Ray Serve's `@serve.batch` closes a batch `batch_wait_timeout_s` after its first request even while the
    previous batch still steps, so under a slow model the requests that arrive during a step are cut into several
    small batches that then wait their turn (2x on 2 CPU cores at 16 sessions: 3.5 sessions a batch, the replica
    stepping 70 % of the time; benchmarks/RESULTS.md session 17). Here one loop steps one batch at a time; after a
    step it takes what is waiting at once: as soon as `target` requests wait, or the oldest has waited `wait_s`
    (a lone request on an idle replica), at most `target` of them, oldest first. Requests whose caller went away
    (cancelled) are dropped before the step. `run(list of argument tuples) -> list of results` answers each;
    an exception answers every request of its batch."""

    def __init__(self, run, target: int, wait_s: float):
        self._run, self.target, self.wait_s = run, target, wait_s
        # seconds the loop spent with no request at all (`idle_s`) and waiting for a batch to fill (`fill_s`)
        self._spent = {"idle_s": 0.0, "fill_s": 0.0}
        self._since: tuple[str, float] | None = None  # the wait going on now: (its key, since when)
        self._waiting: collections.deque = collections.deque()  # (args, future, arrival time)
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def submit(self, *args):
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            # a context of its own: the loop outlives the request that started it (its Serve request id in logs)
            self._task = loop.create_task(self._loop(), context=contextvars.Context())
            self._task.add_done_callback(_loop_ended)
        fut = loop.create_future()
        self._waiting.append((args, fut, time.monotonic()))
        self._arrived.set()
        return await fut

    @property
    def stats(self) -> dict[str, float]:
        """`idle_s` and `fill_s` so far, the wait going on now included."""
        out = dict(self._spent)
        if self._since is not None:
            out[self._since[0]] += time.perf_counter() - self._since[1]
        return out

    @contextlib.contextmanager
    def _count(self, key: str):
        self._since = (key, time.perf_counter())
        try:
            yield
        finally:
            self._spent[key] += time.perf_counter() - self._since[1]
            self._since = None

    def waiting(self) -> list:
        """The argument tuples of the requests waiting now (not yet in a batch)."""
        return [args for args, fut, _ in self._waiting if not fut.done()]

    def _drop_gone(self) -> None:
        while self._waiting and self._waiting[0][1].done():  # cancelled while waiting
            self._waiting.popleft()

    async def _loop(self) -> None:
        while True:
            self._drop_gone()
            if not self._waiting:
                self._arrived.clear()
                with self._count("idle_s"):
                    await self._arrived.wait()
                continue
            with self._count("fill_s"):
                while len(self.waiting()) < self.target:
                    left = self._waiting[0][2] + self.wait_s - time.monotonic()
                    if left <= 0:
                        break
                    self._arrived.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), left)
                    self._drop_gone()
                    if not self._waiting:
                        break
            batch = []
            while self._waiting and len(batch) < max(1, self.target):
                args, fut, _ = self._waiting.popleft()
                if not fut.done():
                    batch.append((args, fut))
            if not batch:
                continue
            try:
                results = await self._run([args for args, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} requests got {len(results)} answers")
            except Exception as exc:  # the step's own errors are answers; this is a bug: every request learns it
                log.exception("policy batch failed outside the step")
                results = [exc] * len(batch)
            except BaseException:  # cancelled (the replica shuts down): nobody waits on a loop that is gone
                for _, fut in batch:
                    fut.cancel()
                for _, fut, _ in self._waiting:
                    fut.cancel()
                self._waiting.clear()
                raise
            for (_, fut), res in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)


def _loop_ended(task: asyncio.Task) -> None:
    """Say how a StepQueue loop ended (it runs until its replica stops; the next request starts a new one)."""
    if task.cancelled():
        log.info("the PolicyServer's batch loop was cancelled")
    elif task.exception() is not None:
        log.error("the PolicyServer's batch loop failed", exc_info=task.exception())


@serve.deployment(name="PolicyServer", max_ongoing_requests=ServeConfig().ongoing_limits()["PolicyServer"],
                  ray_actor_options={"num_cpus": 0.5},
                  health_check_period_s=10, health_check_timeout_s=60, graceful_shutdown_timeout_s=10)
class PolicyServer:
    """Steps many sessions per forward pass (`StepQueue`). Holds each session's recurrent state (both
    streams) next to the model; loads it from the SessionStore on a miss and pushes it back every
    `state_sync_every` steps."""

    def __init__(self, cfg: dict, store: DeploymentHandle):
        from steve1_ray.serving.models import load_serving_policy

        self.cfg = from_dict(ServeConfig, cfg)
        if self.cfg.torch_threads:
            torch.set_num_threads(self.cfg.torch_threads)
        self.policy = load_serving_policy(self.cfg)
        self.embed_dim = A.policy_embed_dim(self.policy)
        self.store = store
        self.hot: dict[str, _Hot] = {}
        try:
            self.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:
            self.replica = f"local-{id(self)}"
        self._queue = StepQueue(self._act_batch, self.cfg.max_batch_size, self.cfg.batch_wait_timeout_s)
        # counters and seconds spent, in /info: where a batch's time goes (the policy, the store's claim and sync)
        self.stats = {"batches": 0, "steps": 0, "max_batch": 0, "loads": 0, "failures": 0,
                      "step_s": 0.0, "claim_s": 0.0, "sync_s": 0.0, "batch_wait_s": self.cfg.batch_wait_timeout_s,
                      "batch_size": self.cfg.max_batch_size}
        self._failures_in_a_row = 0
        self._recent: collections.deque[set[str]] = collections.deque(maxlen=max(2, self.cfg.batch_groups))
        self._batch_step = [0.0, 0]  # [seconds, rows] of the policy steps of the batch being answered

    # -- public methods (called through handles) --
    async def act(self, session_id: str, pov: np.ndarray, client: str | None = None, step: int | None = None) -> dict:
        """One step of one session: pov (H, W, 3) uint8 RGB (128x128 avoids a resize) -> action dict.
        `client` (the API key's id): a session of another client answers 404, like an unknown one.
        `step`: the session's step count this observation is for; a retry of the latest step (its answer was
        lost) gets the same answer again instead of a second step, any other count is a 409."""
        return await self._queue.submit(session_id, pov, client, step)

    async def drop(self, session_id: str) -> bool:
        """Forget the hot state of a session (reset/delete); the next step reloads it from the store."""
        return self.hot.pop(session_id, None) is not None

    def info(self) -> dict:
        cfg = self.policy.cfg
        return {"embed_dim": self.embed_dim, "torch_threads": torch.get_num_threads(),
                "policy": self.cfg.checkpoint or self.cfg.policy,
                "hidsize": cfg.hidsize, "layers": cfg.n_recurrence_layers, "replica": self.replica,
                "hot_sessions": len(self.hot), "max_batch_size": self.cfg.max_batch_size, **self.stats,
                **self._queue.stats}

    def check_health(self):
        if self._failures_in_a_row >= 5:
            raise RuntimeError(f"{self._failures_in_a_row} policy batches failed in a row; replacing this replica")

    # -- batching --
    async def _act_batch(self, requests: list[tuple]) -> list[dict]:
        """One batch of `act` requests (StepQueue): claim, step, sync, answer."""
        session_ids, povs, clients, expected = (list(x) for x in zip(*requests))
        return await self._act(session_ids, povs, clients, expected)

    async def _act(self, session_ids: list[str], povs: list[np.ndarray], clients: list, expected: list) -> list[dict]:
        results: list[dict | None] = [None] * len(session_ids)
        self._batch_step = [0.0, 0]
        with self._timed("claim_s"):
            errors = await self._claim(set(session_ids))
        planned: dict[str, int] = {}  # steps each session will have taken by each request, in arrival order
        for i, (sid, client, want) in enumerate(zip(session_ids, clients, expected)):
            hot = self.hot.get(sid)
            if hot is None:
                continue
            if client is not None and hot.client not in (None, client):  # not theirs
                results[i] = error(404, f"unknown session {sid!r}; create one with POST /sessions")
                continue
            at = planned.get(sid, hot.stream.steps)
            if want is not None and want == at - 1 and at == hot.stream.steps and hot.last_result is not None:
                results[i] = dict(hot.last_result, replayed=True)  # a retry whose answer was lost
            elif want is not None and want != at:
                results[i] = error(409, f"session {sid} is at step {at}; this observation is for step {want} "
                                        f"(send step={at}, or reset the session)", retry=False)
            else:
                planned[sid] = at + 1
        pending = [i for i in range(len(session_ids)) if results[i] is None]
        touched: set[str] = set()
        while pending:  # a session asked twice in one batch steps twice, in arrival order
            seen, now, later = set(), [], []
            for i in pending:
                sid = session_ids[i]
                if sid in errors or sid not in self.hot:
                    results[i] = errors.get(sid) or error(404, f"session {sid} was reset or deleted meanwhile; retry")
                elif sid in seen:
                    later.append(i)
                else:
                    seen.add(sid)
                    now.append(i)
            if now:
                hots = [self.hot[session_ids[i]] for i in now]
                try:
                    t0 = time.perf_counter()
                    actions = await asyncio.to_thread(self._step, [h.stream for h in hots], [povs[i] for i in now])
                    self._count_step(time.perf_counter() - t0, len(now))
                    self._failures_in_a_row = 0
                except Exception as exc:  # a bug, not bad input (inputs are checked at the ingress)
                    self._failures_in_a_row += 1
                    self.stats["failures"] += 1
                    log.exception("policy batch failed")
                    for i in now:
                        results[i] = error(500, f"policy step failed: {type(exc).__name__}: {exc}")
                    pending = later
                    continue
                stamp = time.time()
                for i, h, act in zip(now, hots, actions):
                    h.last_used = stamp
                    touched.add(session_ids[i])
                    results[i] = {"session_id": session_ids[i], "step": h.stream.steps, "action": json_action(act),
                                  "buttons": h.stream.last["buttons"], "camera_bin": h.stream.last["camera"]}
                    h.last_result = results[i]
                self.stats["batches"] += 1
                self.stats["steps"] += len(now)
                self.stats["max_batch"] = max(self.stats["max_batch"], len(now))
            pending = later
        self._expect(touched)
        # before answering: the store knows every step a client has seen. A step the store did not take
        # (the session moved meanwhile) or could not record is not answered as a success.
        for sid, h in self.hot.items():
            if sid not in touched:  # idle this batch: its own rows, not a view that keeps the batch alive
                A.release_slab(h.stream)
        with self._timed("sync_s"):
            rejected = await self._sync(touched, released=set(session_ids) - touched)
        for i, sid in enumerate(session_ids):
            if sid in rejected and isinstance(results[i], dict) and "action" in results[i]:
                results[i] = rejected[sid]
        self._expire()
        return results

    @contextlib.contextmanager
    def _timed(self, key: str):
        """Add the seconds the block takes to `self.stats[key]` (shown in /info)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stats[key] += time.perf_counter() - t0

    def _count_step(self, step_s: float, rows: int) -> None:
        """Count the step's time, and the batch's seconds and rows (a session asked twice steps twice) for the
        next batch's wait (`adapted_batch_wait`, ServeConfig)."""
        self.stats["step_s"] += step_s
        self._batch_step[0] += step_s
        self._batch_step[1] += rows

    def _expect(self, touched: set[str]) -> None:
        """Set the next batch's size (`expected_batch_size` under `batch_size_rule` `sessions`, else
        `max_batch_size`) and its wait, from the last batches and the requests waiting now."""
        self._recent.append(touched)
        if follows_sessions(self.cfg):
            waiting = {args[0] for args in self._queue.waiting()}
            self._queue.target = expected_batch_size(self.cfg, self._recent, self.hot.keys(), waiting)
        if self._batch_step[1]:  # this batch stepped: its time per session sets the next wait
            self._queue.wait_s = adapted_batch_wait(self.cfg, *self._batch_step, self._queue.target)
        self.stats["batch_size"], self.stats["batch_wait_s"] = self._queue.target, self._queue.wait_s

    def _step(self, streams: list, povs: list) -> list[dict]:
        if self.cfg.two_pass_baseline:  # the original's computation, for the load test's baseline
            return [A.two_pass_step(self.policy, st, pov) for st, pov in zip(streams, povs)]
        order = A.batch_order(streams)  # the last batch's rows in order: its state is reused without copies
        actions = A.act_batch(self.policy, [streams[i] for i in order], [povs[i] for i in order])
        out: list = [None] * len(streams)
        for j, i in enumerate(order):
            out[i] = actions[j]
        return out

    async def _claim(self, session_ids: set[str]) -> dict[str, dict]:
        """Ask the store whether this replica's copies are the latest (one call per batch); load the ones
        that are not (another replica stepped them since) or that it lacks. Returns errors by session id."""
        items = [(sid, self.hot[sid].epoch, self.hot[sid].stream.steps) if sid in self.hot else (sid, None, None)
                 for sid in session_ids]
        answers = await self.store.claim.remote(self.replica, items, LEASE_S)
        errors = {sid: a for sid, a in answers.items() if isinstance(a, dict)}
        load = {sid for sid, a in answers.items() if a == "load"}
        for sid in load | set(errors):
            self.hot.pop(sid, None)
        errors.update(await self._ensure_hot(load))
        return errors

    async def _ensure_hot(self, session_ids: set[str]) -> dict[str, dict]:
        """Load sessions this replica does not hold from the store (their saved state, if any)."""
        missing = [sid for sid in session_ids if sid not in self.hot]
        if not missing:
            return {}
        records = await asyncio.gather(*[self.store.get.remote(sid, self.replica, True) for sid in missing])
        errors = {}
        for sid, rec in zip(missing, records):
            if "error" in rec:
                errors[sid] = rec
                continue
            try:
                self.hot[sid] = _Hot(self._stream_from(rec), rec["epoch"], time.time(), rec.get("client"),
                                     rec.get("last_result"))
                self.stats["loads"] += 1
            except ValueError as exc:
                errors[sid] = error(422, str(exc))
        return errors

    def _stream_from(self, rec: dict) -> A.AgentStream:
        s = rec["session"]
        stream = A.new_stream(self.policy, rec["goal_embed"], s["cond_scale"], s["seed"], s["deterministic"])
        if rec.get("state") is not None:
            dev = next(self.policy.parameters()).device
            stream.state = [torch.from_numpy(np.asarray(x)).to(dev) for x in rec["state"]]
            stream.generator.set_state(torch.from_numpy(np.asarray(rec["rng_state"], dtype=np.uint8)))
            stream.steps = int(rec["state_steps"])
        return stream

    async def _sync(self, touched: set[str], released: set[str] = frozenset()) -> dict[str, dict]:
        """Tell the store about the steps (and every `state_sync_every` steps the state and the answer), end the
        claims of `released`; drop the copies the store says moved. Returns the errors to answer instead of
        those steps: 409 for a step the store rejected, 503 when the store could not be reached."""
        every = self.cfg.state_sync_every
        updates = []
        for sid in touched:
            h = self.hot.get(sid)
            if h is None:
                continue
            u = {"session_id": sid, "epoch": h.epoch, "steps": h.stream.steps}
            if every and h.stream.steps % every == 0:
                u["state"] = A.exported_state(h.stream)
                u["rng_state"] = h.stream.generator.get_state().numpy()
                u["last_result"] = h.last_result
            updates.append(u)
        if not updates and not released:
            return {}
        try:
            stale = await self.store.sync.remote(self.replica, updates, tuple(released))
        except Exception as exc:  # the store is restarting: the step is not recorded, so not a success
            log.exception("session sync failed")
            for sid in touched:
                self.hot.pop(sid, None)
            return {sid: error(503, f"the session store did not record this step ({type(exc).__name__}); retry "
                                    f"with the same `step`") for sid in touched}
        rejected = {}
        for sid, epoch in stale:  # only the copy the store rejected, not a newer one
            if sid in self.hot and self.hot[sid].epoch == epoch:
                del self.hot[sid]
            rejected[sid] = error(409, f"session {sid} moved to another replica or was reset during this step; "
                                       f"retry (with the same `step`)")
        return rejected

    def _expire(self) -> None:
        cutoff = time.time() - self.cfg.session_ttl_s
        for sid in [sid for sid, h in self.hot.items() if h.last_used < cutoff]:
            del self.hot[sid]
