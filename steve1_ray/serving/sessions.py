"""Session records: the durable home of every session (goal, scale, seed, step count, recurrent state).

`SessionTable` is the plain logic (no Ray); `SessionStore` is the Serve deployment that wraps it.
The policy replicas keep a hot copy of each session's state next to the model and push it here every
`state_sync_every` steps, so a session survives a policy replica restart or a move to another replica
(see docs/serving.md). Calls across processes return plain dicts; errors are `{"error", "http_status"}`.
"""
from __future__ import annotations

import collections
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


def error(status: int, message: str, retry: bool | None = None) -> dict:
    """A client-visible failure. `retry` False: retrying the same request cannot succeed (no Retry-After, even
    for a 409); None: the status decides (409 and 503 invite a retry)."""
    return {"error": message, "http_status": status, **({} if retry is None else {"retry": retry})}


def new_id(boot: str, length: int) -> str:
    """A random hex id of `length` digits that starts with `boot` (the issuing table's life)."""
    return boot + uuid.uuid4().hex[:length - len(boot)]


def from_earlier_boot(ident: str, boot: str, length: int) -> bool:
    """True for an id issued (see `new_id`) by an earlier life of a table that restarted since."""
    return len(ident) == length and all(c in "0123456789abcdef" for c in ident) and not ident.startswith(boot)


@dataclass
class SessionRecord:
    session_id: str
    goal_embed: np.ndarray  # (D,) float32
    cond_scale: Optional[float]
    seed: int
    deterministic: bool = False
    prompt: Optional[str] = None
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    steps: int = 0
    epoch: int = 0  # bumped by reset(): replicas drop hot state from an older epoch
    state: Optional[list] = None  # list of np arrays (rows, ...) at `state_steps`
    rng_state: Optional[np.ndarray] = None
    state_steps: int = 0
    owner: Optional[str] = None  # the policy replica holding the hot state (its lease, see `claim`)
    last_result: Optional[dict] = None  # the answer of step `steps` (an idempotent retry gets it again)
    in_flight: Optional[str] = None  # the replica stepping it right now (claimed, not synced yet) ...
    in_flight_until: float = 0.0  # ... until then at most (a replica that died mid-step)
    client: Optional[str] = None  # the API key's id that created it (auth.py); None: internal (rollouts)

    def public(self) -> dict:
        return {"session_id": self.session_id, "cond_scale": self.cond_scale, "seed": self.seed,
                "deterministic": self.deterministic, "prompt": self.prompt, "steps": self.steps,
                "created": self.created, "last_used": self.last_used, "embed_dim": int(self.goal_embed.size)}


class SessionTable:
    """Sessions by id with an idle timeout and a cap; expired ids are remembered (for a 410, not a 404).

    Not thread-safe by itself: `SessionStore` calls it from its event loop only (async methods)."""

    def __init__(self, max_sessions: int = 256, ttl_s: float = 600.0, clock=time.time, max_per_client: int = 0):
        self.max_sessions, self.ttl_s, self.clock = max_sessions, ttl_s, clock
        self.boot = uuid.uuid4().hex[:8]  # the first 8 hex digits of every session id of this table's life
        self.contact: dict[str, float] = {}  # policy replica -> last claim or sync (its lease on its sessions)
        self.max_per_client = max_per_client or max_sessions
        self.sessions: dict[str, SessionRecord] = {}
        self.expired: collections.OrderedDict[str, float] = collections.OrderedDict()

    def expire_idle(self) -> list[str]:
        now = self.clock()
        gone = [sid for sid, r in self.sessions.items() if now - r.last_used > self.ttl_s]
        for sid in gone:
            del self.sessions[sid]
            self.expired[sid] = now
        while len(self.expired) > 10_000:
            self.expired.popitem(last=False)
        return gone

    def missing(self, sid: str) -> dict:
        if sid in self.expired:
            return error(410, f"session {sid} expired after {self.ttl_s:.0f} s without requests; "
                              f"create a new one with POST /sessions")
        if from_earlier_boot(sid, self.boot, 32):
            return error(410, f"session {sid} was created before the session store restarted (server restarted: "
                              f"its sessions are gone); create a new one with POST /sessions")
        return error(404, f"unknown session {sid!r}; create one with POST /sessions")

    def _lookup(self, sid: str, client: Optional[str]) -> Optional[SessionRecord]:
        """The record, if it exists and `client` may see it (None: an internal caller sees all)."""
        rec = self.sessions.get(sid)
        if rec is None or (client is not None and rec.client is not None and rec.client != client):
            return None
        return rec

    def create(self, goal_embed, cond_scale, seed: int, deterministic=False, prompt=None,
               client: Optional[str] = None) -> dict:
        self.expire_idle()
        if len(self.sessions) >= self.max_sessions:
            return error(429, f"too many open sessions ({len(self.sessions)} of max_sessions="
                              f"{self.max_sessions}); delete idle ones (DELETE /sessions/{{id}}) or retry later")
        if client is not None:
            mine = sum(1 for r in self.sessions.values() if r.client == client)
            if mine >= self.max_per_client:
                return error(429, f"this client holds {mine} open sessions (max_sessions_per_key="
                                  f"{self.max_per_client}); delete idle ones (DELETE /sessions/{{id}}) or retry later")
        sid = new_id(self.boot, 32)  # 96 random bits after the table's boot id
        now = self.clock()
        rec = SessionRecord(sid, np.asarray(goal_embed, np.float32).reshape(-1), cond_scale, int(seed),
                            bool(deterministic), prompt, created=now, last_used=now, client=client)
        self.sessions[sid] = rec
        return {"session": rec.public()}

    def get(self, sid: str, owner: Optional[str] = None, with_state: bool = False,
            client: Optional[str] = None) -> dict:
        """The record (optionally claiming it for `owner` and including the saved state)."""
        self.expire_idle()
        rec = self._lookup(sid, client)
        if rec is None:
            return self.missing(sid)
        rec.last_used = self.clock()
        if owner is not None:
            rec.owner = owner
        out = {"session": rec.public(), "goal_embed": rec.goal_embed, "epoch": rec.epoch, "client": rec.client}
        if with_state:
            out.update(state=rec.state, rng_state=rec.rng_state, state_steps=rec.state_steps,
                       last_result=rec.last_result if rec.state_steps == rec.steps else None)
        return out

    def claim(self, owner: str, items: list, lease_s: float = 10.0) -> dict:
        """Before a policy replica steps sessions: for each (id, epoch, steps) of its hot copy (None, None if it
        holds none) -> "ok" (its copy is the latest: step it), "load" (load the store's copy first, which is
        the latest), or an error: 409 while another replica holds newer state the store has not seen (its
        lease: `lease_s` since its last contact), 404/410 for a missing session. After `lease_s` without word
        from that replica (it died), the session continues from its last synced state. The claimer owns the
        session afterwards."""
        self.expire_idle()
        now = self.clock()
        self.contact[owner] = now
        out: dict[str, Any] = {}
        for sid, epoch, steps in items:
            rec = self.sessions.get(sid)
            if rec is None:
                out[sid] = self.missing(sid)
                continue
            if rec.in_flight not in (None, owner) and now < rec.in_flight_until:
                out[sid] = error(409, f"session {sid} is being stepped on another policy replica right now; retry "
                                      f"(with the same `step`)")
                continue
            if rec.owner == owner and epoch == rec.epoch and steps == rec.steps:
                out[sid] = "ok"
            elif rec.state_steps == rec.steps:  # the store holds the latest state: a move is exact
                out[sid] = "load"
            elif rec.owner not in (None, owner) and now - self.contact.get(rec.owner, 0.0) < lease_s:
                out[sid] = error(409, f"session {sid} is being stepped on another policy replica whose latest "
                                      f"state (step {rec.steps}) is not in the session store yet "
                                      f"(state_sync_every > 1); retry in a moment")
                continue
            else:  # its replica is gone (lease over): continue from the last synced state
                rec.steps, rec.last_result = rec.state_steps, None
                out[sid] = "load"
            rec.in_flight, rec.in_flight_until = owner, now + lease_s
            rec.owner, rec.last_used = owner, now
        return out

    def sync(self, owner: str, updates: list[dict], released: tuple = ()) -> list[tuple[str, int]]:
        """Step counts (and maybe states) from a policy replica -> (id, epoch) copies it must drop
        (the session moved to another replica, was reset, or is gone). Ends the claims of the updated
        sessions and of `released` (claimed but not stepped)."""
        self.expire_idle()
        now, stale = self.clock(), []
        self.contact[owner] = now
        for sid in [u["session_id"] for u in updates] + list(released):
            rec = self.sessions.get(sid)
            if rec is not None and rec.in_flight == owner:
                rec.in_flight = None
        for u in updates:
            rec = self.sessions.get(u["session_id"])
            if rec is None or rec.epoch != u["epoch"] or (rec.owner not in (None, owner)):
                stale.append((u["session_id"], u["epoch"]))
                continue
            rec.owner, rec.last_used = owner, now
            rec.steps = max(rec.steps, int(u["steps"]))
            if u.get("state") is not None:
                rec.state, rec.rng_state, rec.state_steps = u["state"], u["rng_state"], int(u["steps"])
                rec.last_result = u.get("last_result")
        return stale

    def reset(self, sid: str, cond_scale: Any = "keep", seed: Any = "keep", client: Optional[str] = None) -> dict:
        self.expire_idle()
        rec = self._lookup(sid, client)
        if rec is None:
            return self.missing(sid)
        if cond_scale != "keep":
            rec.cond_scale = cond_scale
        if seed != "keep":
            rec.seed = int(seed)
        rec.steps, rec.state, rec.rng_state, rec.state_steps, rec.last_result = 0, None, None, 0, None
        rec.epoch += 1
        rec.owner = None
        rec.last_used = self.clock()
        return {"session": rec.public()}

    def delete(self, sid: str, client: Optional[str] = None) -> dict:
        if self._lookup(sid, client) is None:
            return self.missing(sid)
        del self.sessions[sid]
        return {"deleted": sid}

    def stats(self) -> dict:
        self.expire_idle()
        return {"open": len(self.sessions), "max_sessions": self.max_sessions, "ttl_s": self.ttl_s}
