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


def error(status: int, message: str) -> dict:
    return {"error": message, "http_status": status}


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
    owner: Optional[str] = None  # the policy replica holding the hot state
    client: Optional[str] = None  # the API key's id that created it (auth.py); None: internal (rollouts)

    def public(self) -> dict:
        return {"session_id": self.session_id, "cond_scale": self.cond_scale, "seed": self.seed,
                "deterministic": self.deterministic, "prompt": self.prompt, "steps": self.steps,
                "created": self.created, "last_used": self.last_used, "embed_dim": int(self.goal_embed.size)}


class SessionTable:
    """Sessions by id with an idle timeout and a cap; expired ids are remembered (for a 410, not a 404)."""

    def __init__(self, max_sessions: int = 256, ttl_s: float = 600.0, clock=time.time, max_per_client: int = 0):
        self.max_sessions, self.ttl_s, self.clock = max_sessions, ttl_s, clock
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
        sid = uuid.uuid4().hex
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
            out.update(state=rec.state, rng_state=rec.rng_state, state_steps=rec.state_steps)
        return out

    def sync(self, owner: str, updates: list[dict]) -> list[tuple[str, int]]:
        """Step counts (and maybe states) from a policy replica -> (id, epoch) copies it must drop
        (the session moved to another replica, was reset, or is gone)."""
        self.expire_idle()
        now, stale = self.clock(), []
        for u in updates:
            rec = self.sessions.get(u["session_id"])
            if rec is None or rec.epoch != u["epoch"] or (rec.owner not in (None, owner)):
                stale.append((u["session_id"], u["epoch"]))
                continue
            rec.owner, rec.last_used = owner, now
            rec.steps = max(rec.steps, int(u["steps"]))
            if u.get("state") is not None:
                rec.state, rec.rng_state, rec.state_steps = u["state"], u["rng_state"], int(u["steps"])
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
        rec.steps, rec.state, rec.rng_state, rec.state_steps = 0, None, None, 0
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
