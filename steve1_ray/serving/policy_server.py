"""Serve deployments that hold models: `PolicyServer` (batched CFG steps, hot session state),
`SessionStore` (durable session records) and `GoalEmbedder` (prompt/clip -> goal embedding)."""
from __future__ import annotations

import asyncio
import collections
import contextlib
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


def adapted_batch_wait(cfg: ServeConfig, step_s: float, rows: int) -> float:
    """The next batch's wait: `batch_wait_fraction` of what a full batch (`max_batch_size` sessions) would take at
    the last step's time per session, between `batch_wait_timeout_s` and `max_batch_wait_s` (the least wins if
    they cross). Per session, not per batch: a wait based on the last batch's time keeps small batches small (they
    step fast and keep the wait short). 2x on 2 cores (~0.19 s per session, 16 sessions) waits the 0.5 s cap;
    debug keeps ~5-10 ms (benchmarks/RESULTS.md, session 15). Ray Serve reads the wait when a batch's first request
    arrives, so a new value takes effect from the batch after next."""
    full_s = step_s / max(1, rows) * cfg.max_batch_size
    return max(cfg.batch_wait_timeout_s, min(cfg.max_batch_wait_s, cfg.batch_wait_fraction * full_s))


def follows_sessions(cfg: ServeConfig) -> bool:
    """Whether the batch size follows the sessions (`expected_batch_size`) or stays `max_batch_size`."""
    return cfg.batch_size_rule == "sessions" or (cfg.batch_size_rule == "auto" and not cfg.device.startswith("cuda"))


def expected_batch_size(cfg: ServeConfig, recent, hot) -> int:
    """A batch is full once every session that stepped in the `recent` batches (and is still `hot`) has asked
    again, at most `max_batch_size`; before any batch, `max_batch_size`. Without it a batch under a large
    `max_batch_size` waits out its whole timeout for company that cannot come (the clients of a slow model answer in
    lockstep). With it, 2x on 2 CPU cores settles into small batches (3.5 sessions on average at 16 sessions, 5.8 at
    64) formed while the previous one steps, so the policy steps while the last answers travel: 4.4 / 5.3 actions/s
    against 4.1 / 4.1 with full batches, p50 latency 2.6 / 8.6 s against 2.9 / 10.8 s (benchmarks/RESULTS.md,
    session 17). A session that stops asking is expected for `len(recent)` more batches (each then waits out its
    timeout)."""
    active = len(set().union(*recent) & set(hot))
    return max(1, min(cfg.max_batch_size, active or cfg.max_batch_size))


@serve.deployment(name="PolicyServer", max_ongoing_requests=ServeConfig().ongoing_limits()["PolicyServer"],
                  ray_actor_options={"num_cpus": 0.5},
                  health_check_period_s=10, health_check_timeout_s=60, graceful_shutdown_timeout_s=10)
class PolicyServer:
    """Steps many sessions per forward pass (`@serve.batch`). Holds each session's recurrent state (both
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
        self._act.set_max_batch_size(self.cfg.max_batch_size)
        self._act.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)
        # counters and seconds spent, in /info: where a batch's time goes (the policy, the store's claim and sync)
        self.stats = {"batches": 0, "steps": 0, "max_batch": 0, "loads": 0, "failures": 0,
                      "step_s": 0.0, "claim_s": 0.0, "sync_s": 0.0, "batch_wait_s": self.cfg.batch_wait_timeout_s,
                      "batch_size": self.cfg.max_batch_size}
        self._failures_in_a_row = 0
        self._recent: collections.deque[set[str]] = collections.deque(maxlen=2)  # sessions of the last batches

    # -- public methods (called through handles) --
    async def act(self, session_id: str, pov: np.ndarray, client: str | None = None, step: int | None = None) -> dict:
        """One step of one session: pov (H, W, 3) uint8 RGB (128x128 avoids a resize) -> action dict.
        `client` (the API key's id): a session of another client answers 404, like an unknown one.
        `step`: the session's step count this observation is for; a retry of the latest step (its answer was
        lost) gets the same answer again instead of a second step, any other count is a 409."""
        return await self._act(session_id, pov, client, step)

    async def drop(self, session_id: str) -> bool:
        """Forget the hot state of a session (reset/delete); the next step reloads it from the store."""
        return self.hot.pop(session_id, None) is not None

    def info(self) -> dict:
        cfg = self.policy.cfg
        return {"embed_dim": self.embed_dim, "torch_threads": torch.get_num_threads(),
                "policy": self.cfg.checkpoint or self.cfg.policy,
                "hidsize": cfg.hidsize, "layers": cfg.n_recurrence_layers, "replica": self.replica,
                "hot_sessions": len(self.hot), "max_batch_size": self.cfg.max_batch_size, **self.stats}

    def check_health(self):
        if self._failures_in_a_row >= 5:
            raise RuntimeError(f"{self._failures_in_a_row} policy batches failed in a row; replacing this replica")

    # -- batching --
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _act(self, session_ids: list[str], povs: list[np.ndarray], clients: list, expected: list) -> list[dict]:
        results: list[dict | None] = [None] * len(session_ids)
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
                    self._adapt_wait(time.perf_counter() - t0, len(now))
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

    def _adapt_wait(self, step_s: float, rows: int) -> None:
        """Count the step's time and set the next batch's wait to `batch_wait_fraction` of it (ServeConfig)."""
        self.stats["step_s"] += step_s
        wait = adapted_batch_wait(self.cfg, step_s, rows)
        if wait != self.stats["batch_wait_s"]:
            self._act.set_batch_wait_timeout_s(wait)
            self.stats["batch_wait_s"] = wait

    def _expect(self, touched: set[str]) -> None:
        """Set the next batch's size to `expected_batch_size` of the last two batches' sessions (ServeConfig
        `batch_size_rule`; Ray Serve reads a new size when a batch's first request arrives, often while the batch
        before it still steps, so it takes effect a batch or two later)."""
        if not follows_sessions(self.cfg):
            return
        self._recent.append(touched)
        size = expected_batch_size(self.cfg, self._recent, self.hot.keys())
        if size != self.stats["batch_size"]:
            self._act.set_max_batch_size(size)
            self.stats["batch_size"] = size

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
                u["state"] = [s.detach().cpu().numpy() for s in h.stream.state]
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
