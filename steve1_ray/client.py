"""A small Python client for the served HTTP API (`steve1 serve`), with typed errors.

    from steve1_ray.client import Client
    api = Client("http://127.0.0.1:8000", api_key=None)          # or the STEVE1_API_KEY environment variable
    with api.session(prompt="chop a tree", cond_scale=6.0, seed=1) as s:
        action = s.act(frame)                                   # (H, W, 3) uint8 RGB -> MineRL action dict
    rollout = api.rollout("collect a sapling", steps=200)       # start, wait, then .metrics() / .video()

Every 4xx/5xx answer raises an `ApiError` subclass carrying the status and the server's `error` text. A step
carries the session's step count, so `Session.act` can retry a 503 (a replica restarting) or a dropped
connection without ever taking a step twice: the server answers a repeated step with the same action.
"""
from __future__ import annotations

import base64
import os
import time
from typing import Any

import numpy as np


class ApiError(Exception):
    """An error answer of the service: `status` (HTTP code) and `message` (what to fix)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class BadRequest(ApiError):
    """400 / 422: the request is malformed or its values are out of range."""


class Unauthorized(ApiError):
    """401: missing or wrong API key."""


class NotFound(ApiError):
    """404: no such session or rollout (or not yours)."""


class Conflict(ApiError):
    """409: the session is busy elsewhere (retrying later may succeed) or, as `FinalConflict`, at another step."""


class Gone(ApiError):
    """410: the session expired, or the server restarted since it was created."""


class TooLarge(ApiError):
    """413: the body or the image is over the server's limits."""


class TooMany(ApiError):
    """429: too many sessions or queued rollouts."""


class Unavailable(ApiError):
    """503 (and other 5xx): a part of the service is restarting or overloaded; retry."""


class FinalConflict(Conflict):
    """409 without Retry-After: the request contradicts the session's state (a step count it is not at); never
    retried."""


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 404: NotFound, 409: Conflict, 410: Gone, 413: TooLarge,
              422: BadRequest, 429: TooMany}
RETRYABLE = (Conflict, Unavailable)


def _raise_for(response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        message = body.get("error", response.text) if isinstance(body, dict) else response.text[:500]
    except ValueError:
        message = response.text[:500]
    cls = _BY_STATUS.get(response.status_code, Unavailable if response.status_code >= 500 else ApiError)
    if cls is Conflict and "retry-after" not in response.headers:
        cls = FinalConflict  # e.g. a step count the session is not at: the same request can never succeed
    raise cls(response.status_code, message)


def encode_frame(frame: np.ndarray | bytes) -> dict:
    """An observation body: an array goes as lossless raw RGB bytes with their shape (no image codec either side);
    `bytes` are an already encoded PNG/JPEG image (e.g. a camera's JPEG), sent as they are."""
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return {"image": base64.b64encode(frame).decode()}
    arr = np.ascontiguousarray(frame, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"a frame is (height, width, 3) uint8 RGB, got shape {arr.shape}")
    return {"pixels": base64.b64encode(arr.tobytes()).decode(), "shape": list(arr.shape)}


class Client:
    """The service at `url`; `api_key` (default: $STEVE1_API_KEY) is sent as `x-api-key`."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0, retries: int = 5):
        import requests

        self.url, self.timeout, self.retries = url.rstrip("/"), timeout, retries
        self.http = requests.Session()
        key = api_key if api_key is not None else os.environ.get("STEVE1_API_KEY")
        if key:
            self.http.headers["x-api-key"] = key

    def request(self, method: str, path: str, **kw) -> Any:
        r = self.http.request(method, self.url + path, timeout=self.timeout, **kw)
        _raise_for(r)
        if r.status_code == 204:
            return None
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.content

    def info(self) -> dict:
        return self.request("GET", "/info")

    def goal(self, prompt: str, prior_seed: int | None = 0) -> np.ndarray:
        """The goal embedding a prompt maps to (MineCLIP text encoder + prior sample)."""
        out = self.request("POST", "/goals", json={"prompt": prompt, "prior_seed": prior_seed})
        return np.asarray(out["goal_embed"], np.float32)

    def session(self, prompt: str | None = None, goal_embed=None, cond_scale: float | None = None,
                seed: int | None = None, prior_seed: int | None = 0, deterministic: bool = False) -> "Session":
        body = {"prompt": prompt, "cond_scale": cond_scale, "seed": seed, "prior_seed": prior_seed,
                "deterministic": deterministic,
                "goal_embed": None if goal_embed is None else [float(x) for x in np.asarray(goal_embed).ravel()]}
        created = self.request("POST", "/sessions", json={k: v for k, v in body.items() if v is not None})
        return Session(self, created)

    def rollout(self, prompt: str, steps: int | None = None, cond_scale: float | None = None,
                world_seed: int | None = None, policy_seed: int | None = None, wait: bool = True,
                poll_s: float = 1.0) -> "Rollout":
        body = {"prompt": prompt, "steps": steps, "cond_scale": cond_scale, "world_seed": world_seed,
                "policy_seed": policy_seed}
        rollout = Rollout(self, self.request("POST", "/rollouts", json={k: v for k, v in body.items()
                                                                        if v is not None}))
        if wait:
            rollout.wait(poll_s)
        return rollout


class Session:
    """One episode's session; `act(frame)` steps it. A context manager that deletes it at the end."""

    def __init__(self, client: Client, created: dict):
        self.client, self.info = client, created
        self.id, self.steps = created["session_id"], int(created.get("steps", 0))

    def act(self, frame: np.ndarray | bytes) -> dict:
        """One step: the frame ((H, W, 3) uint8 RGB, or PNG/JPEG bytes) -> the MineRL action dict (buttons 0/1,
        camera [pitch, yaw] degrees). Retries a 503/409 or a dropped connection with the same step count: a step
        is never taken twice."""
        import requests

        body = {**encode_frame(frame), "step": self.steps}
        for attempt in range(self.client.retries + 1):
            try:
                out = self.client.request("POST", f"/sessions/{self.id}/act", json=body)
                break
            except (requests.ConnectionError, *RETRYABLE) as exc:
                if attempt == self.client.retries or isinstance(exc, FinalConflict):
                    raise
                time.sleep(min(0.5 * 2 ** attempt, 8.0))
        self.steps = int(out["step"])
        self.last = out
        return out["action"]

    def reset(self, cond_scale: float | None = None, seed: int | None = None) -> dict:
        body = {k: v for k, v in (("cond_scale", cond_scale), ("seed", seed)) if v is not None}
        self.info = self.client.request("POST", f"/sessions/{self.id}/reset", json=body or None)
        self.steps = 0
        return self.info

    def close(self) -> None:
        try:
            self.client.request("DELETE", f"/sessions/{self.id}")
        except (NotFound, Gone):
            pass

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Rollout:
    """An episode the server plays in its world: `wait()`, then `metrics()` and `video()` (mp4 bytes)."""

    def __init__(self, client: Client, status: dict):
        self.client, self.status = client, status
        self.id = status["rollout_id"]

    def refresh(self) -> dict:
        self.status = self.client.request("GET", f"/rollouts/{self.id}")
        return self.status

    def wait(self, poll_s: float = 1.0, timeout_s: float = 3600.0, on_poll=None) -> dict:
        """Poll until done (returns the status) or failed (ApiError); `on_poll(status)` sees every poll."""
        deadline = time.time() + timeout_s
        while self.refresh()["status"] in ("queued", "running"):
            if on_poll is not None:
                on_poll(self.status)
            if time.time() > deadline:
                raise TimeoutError(f"rollout {self.id} still {self.status['status']} after {timeout_s:.0f} s")
            time.sleep(poll_s)
        if self.status["status"] == "failed":
            raise ApiError(500, f"rollout {self.id} failed: {self.status.get('error')}")
        return self.status

    def metrics(self) -> dict:
        return self.client.request("GET", f"/rollouts/{self.id}/metrics")

    def video(self) -> bytes:
        return self.client.request("GET", f"/rollouts/{self.id}/video.mp4")
