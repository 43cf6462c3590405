"""The Serve application: FastAPI ingress (`Api`) over PolicyServer, SessionStore, GoalEmbedder, Rollouts.

    serve run serve/config.yaml          # or: steve1 serve [--config serve/config.yaml] [key=value ...]

Endpoints (OpenAPI docs at /docs): POST /sessions, POST /sessions/{id}/act, POST /sessions/{id}/reset,
GET|DELETE /sessions/{id}, POST /goals, POST /rollouts, GET /rollouts/{id}[/metrics|/video.mp4|/frame.jpg],
GET /healthz, GET /info, GET / (web page). Every client mistake is a 4xx whose `error` says what to fix.
"""
# No `from __future__ import annotations`: FastAPI must see the body models as classes, not strings.
import asyncio
import json
import logging
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from steve1_ray.agent import resize_pov
from steve1_ray.config import ConfigError, from_dict, load_config, to_dict
from steve1_ray.hostmem import runtime_env
from steve1_ray.serving import auth
from steve1_ray.serving.config import MAX_CLIP_FRAMES, MAX_COND_SCALE, MAX_ROLLOUT_STEPS, ServeConfig
from steve1_ray.serving.inputs import InputError, check_embedding, check_scale, decode_image, decode_pixels
from steve1_ray.serving.page import index_html
from steve1_ray.serving.policy_server import STICKY, GoalEmbedder, PolicyServer, SessionStore
from steve1_ray.serving.rollouts import RolloutManager

log = logging.getLogger("ray.serve")
PUBLIC_PATHS = {"/", "/healthz", "/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"}

app = FastAPI(title="STEVE-1 prompt-to-action service",
              description="Classifier-free-guided STEVE-1 policy on Ray Serve: sessions, batched steps, rollouts.",
              version="0.1.0")


# ----------------------------------------------------------------------------------------- schemas
# Every number is bounded here, so /openapi.json states the limits; a config may narrow them (max_cond_scale,
# rollout_max_steps, max_clip_frames), never widen them.

SEED_MAX = 2**63 - 1  # torch generators take 64-bit seeds
WORLD_SEED_MAX = 2**32 - 1  # crafter's worlds: numpy RandomState
EMBED_ABS_MAX = 1e4  # embeddings are O(1); the bound keeps every value finite in float32
MAX_EMBED_DIM = 4096
MAX_IMAGE_CHARS = 16 * 1024 * 1024  # base64 text of one image (the body limit applies first)
MAX_JSON_CONTAINERS = 1000  # `[{},{},...]` costs ~30x its bytes once parsed; real requests hold a handful
MAX_PROMPT_CHARS = 300  # CLIP reads 77 tokens; byte-pair encoding is quadratic in a word's length

Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
WorldSeed = Annotated[int, Field(ge=0, le=WORLD_SEED_MAX)]
Scale = Annotated[float, Field(ge=-MAX_COND_SCALE, le=MAX_COND_SCALE, allow_inf_nan=False)]
EmbedValue = Annotated[float, Field(ge=-EMBED_ABS_MAX, le=EMBED_ABS_MAX, allow_inf_nan=False)]
Embedding = Annotated[List[EmbedValue], Field(min_length=1, max_length=MAX_EMBED_DIM)]
Image = Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_CHARS)]
Clip = Annotated[List[Image], Field(min_length=1, max_length=MAX_CLIP_FRAMES)]
Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]


class CreateSession(BaseModel):
    prompt: Optional[Prompt] = Field(None, description="Text instruction (MineCLIP text encoder + prior).")
    goal_embed: Optional[Embedding] = Field(None, description="A goal embedding of width embed_dim.")
    clip: Optional[Clip] = Field(None, description="Visual goal: 1..16 base64 PNG/JPEG frames (oldest first).")
    cond_scale: Optional[Scale] = Field(None, description="Guidance scale (default: the server's, 6.0).")
    seed: Optional[Seed] = Field(None, description="Seed of the session's action sampling (random if unset).")
    prior_seed: Optional[Seed] = Field(0, description="Seed of the prior sample for a text prompt.")
    deterministic: bool = Field(False, description="Take the argmax action instead of sampling.")


class Observation(BaseModel):
    image: Optional[Image] = Field(None, description="base64 PNG/JPEG/BMP/WebP frame (resized to 128x128).")
    pixels: Optional[Image] = Field(None, description="base64 raw uint8 RGB bytes (lossless), with `shape`.")
    shape: Optional[Annotated[List[Annotated[int, Field(ge=1, le=65535)]], Field(min_length=3, max_length=3)]] = \
        Field(None, description="[height, width, 3] of `pixels`.")
    step: Optional[Annotated[int, Field(ge=0, le=SEED_MAX)]] = Field(
        None, description="The session's step count this observation is for (0 for the first). With it, a retry "
                          "whose answer was lost gets the same action again, never a second step; a wrong "
                          "count is 409.")


class ResetSession(BaseModel):
    cond_scale: Optional[Scale] = None
    seed: Optional[Seed] = None


class GoalRequest(BaseModel):
    prompt: Optional[Prompt] = None
    clip: Optional[Clip] = None
    prior_seed: Optional[Seed] = 0


class StartRollout(BaseModel):
    prompt: Optional[Prompt] = None
    goal_embed: Optional[Embedding] = None
    cond_scale: Optional[Scale] = None
    steps: Optional[Annotated[int, Field(ge=1, le=MAX_ROLLOUT_STEPS)]] = Field(
        None, description="Episode length (default rollout_default_steps, at most rollout_max_steps).")
    world_seed: Optional[WorldSeed] = None
    policy_seed: Optional[Seed] = None
    prior_seed: Optional[Seed] = 0


# What comes back (FastAPI checks every response against these, and /openapi.json shows them).

class ErrorOut(BaseModel):
    error: str = Field(description="What was wrong and how to fix it.")


class SessionOut(BaseModel):
    session_id: str
    cond_scale: Optional[float]
    seed: int
    deterministic: bool
    prompt: Optional[str]
    steps: int
    created: float
    last_used: float
    embed_dim: int


class CreatedSession(SessionOut):
    expires_after_idle_s: float


class ActionOut(BaseModel):
    session_id: str
    step: int = Field(description="Steps this session has taken.")
    action: Dict[str, Union[int, List[float]]] = Field(
        description="MineRL action: each button 0/1, camera [pitch, yaw] degrees.")
    buttons: int = Field(description="Index of the joint button action (VPT's 8641-way head).")
    camera_bin: int = Field(description="Index of the camera action (121 bins).")
    replayed: bool = Field(False, description="True: the answer of a step already taken (a retried `step`).")


class DeletedOut(BaseModel):
    deleted: str


class GoalOut(BaseModel):
    goal_embed: List[float]
    embed_dim: int


class RolloutOut(BaseModel):
    rollout_id: str
    status: Literal["queued", "running", "done", "failed"]
    prompt: Optional[str]
    cond_scale: float
    created: float
    started: Optional[float] = None
    finished: Optional[float] = None
    step: int
    steps: int
    reward: Optional[float] = None
    steps_per_s: Optional[float] = None
    achievements: Dict[str, int]
    inventory: Dict[str, int]
    metrics: Optional[Dict[str, Any]] = None
    error: Optional[str] = None


class InfoOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # plus the policy replica's counters
    embed_dim: int
    policy: str
    default_cond_scale: float
    max_cond_scale: float
    max_sessions: int
    max_sessions_per_key: int
    session_ttl_s: float
    max_payload_bytes: int
    max_inflight_bytes: int
    max_image_pixels: int
    max_clip_frames: int
    rollout_backend: str
    rollout_max_steps: int
    auth: bool


class HealthOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # one entry per deployment
    status: Literal["ok", "degraded"]


ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 404, 409, 410, 413, 422, 429, 500, 503)}


# ----------------------------------------------------------------------------------------- errors

def _fail(result: Any) -> Any:
    """Results from deployments are plain values, or {"error", "http_status"} for a client mistake."""
    if isinstance(result, dict) and "http_status" in result:
        raise InputError(int(result["http_status"]), str(result["error"]), result.get("retry"))
    return result


@app.exception_handler(InputError)
async def _input_error(request: Request, exc: InputError):
    retry = {"Retry-After": "2"} if exc.retry else None  # a step-count mismatch (409) is final: no Retry-After
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=retry)


def _unavailable_types() -> tuple:
    """Ray's "that replica or actor is gone (or too busy) right now" errors: retrying later can succeed."""
    import ray.exceptions as rex
    from ray.serve import exceptions as sex

    return (rex.RayActorError, rex.ActorUnavailableError, rex.GetTimeoutError, sex.BackPressureError,
            sex.DeploymentUnavailableError, sex.ReplicaUnavailableError, asyncio.TimeoutError)


@app.exception_handler(Exception)
async def _server_error(request: Request, exc: Exception):
    """Never a bare 500: a dead or overloaded replica is JSON 503 + Retry-After; a bug is JSON 500."""
    if isinstance(exc, _unavailable_types()):
        return JSONResponse({"error": f"a part of the service is restarting or overloaded ({type(exc).__name__}); "
                                      f"retry in a few seconds"}, status_code=503, headers={"Retry-After": "2"})
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has the details"},
                        status_code=500)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException):
    """Starlette's own 4xx (unknown route or method, a body that is not UTF-8 JSON) in our `{"error"}` shape."""
    return JSONResponse({"error": f"{exc.detail} ({request.method} {request.url.path}; see /docs)"},
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError):
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return JSONResponse({"error": "bad request body; " + "; ".join(parts) + " (see /docs for the schema)"},
                        status_code=422)


async def _send_json(send, status: int, body: dict, headers: tuple = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """ASGI middleware, before FastAPI parses anything: the API key (which client is this?) and the body limits,
    counted while the body streams in, so a chunked upload without Content-Length costs at most the limit: one
    body at most `max_payload_bytes` (413), all the bodies the replica holds at most `max_inflight_bytes` (503)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        from steve1_ray.serving import inputs  # the real module: Serve pickles this app by value

        cfg: ServeConfig | None = inputs.RUNTIME.get("cfg")
        if scope["type"] != "http" or cfg is None:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        client = auth.ANONYMOUS
        digests = inputs.RUNTIME.get("key_digests") or []
        if digests and scope["path"] not in PUBLIC_PATHS:
            given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
            client = auth.identify(given, digests)
            if client is None:
                return await _send_json(send, 401, {"error": "missing or wrong API key; send the header "
                                                             "x-api-key: <key>"}, ((b"www-authenticate", b"ApiKey"),))
        scope.setdefault("state", {})["client"] = client
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
                return await _send_json(send, 400, {"error": f"{scope['method']} takes no request body"},
                                        ((b"connection", b"close"),))
            return await self.app(scope, receive, send)
        limit = cfg.max_payload_bytes
        too_big = {"error": f"request body is over {limit} bytes (max_payload_bytes): send a smaller (e.g. 128x128 "
                            f"JPEG) image"}
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _send_json(send, 413 if length.isdigit() else 400,
                                    too_big if length.isdigit() else {"error": "bad Content-Length header"})
        budget, held = inputs.BODIES, 0
        share = cfg.max_inflight_bytes // 4 if client != auth.ANONYMOUS else None  # one API key's part
        busy = {"error": f"the server holds its limit of request bodies (max_inflight_bytes {cfg.max_inflight_bytes}"
                         f", a quarter of it per API key); retry shortly"}
        busy_headers = ((b"retry-after", b"1"), (b"connection", b"close"))
        try:
            if length is not None:  # reserve the declared body before reading a byte of it
                if not budget.take(int(length), cfg.max_inflight_bytes, client, share):
                    return await _send_json(send, 503, busy, busy_headers)
                held = int(length)
            chunks, size = [], 0
            while True:  # read the body here, stopping at the limit
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return await _send_json(send, 413, too_big, ((b"connection", b"close"),))
                if size > held:  # a chunked body (or more than declared): take what it grew by
                    if not budget.take(size - held, cfg.max_inflight_bytes, client, share):
                        return await _send_json(send, 503, busy, busy_headers)
                    held = size
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body, replayed = b"".join(chunks), False
            del chunks
            if body.count(b"{") + body.count(b"[") > MAX_JSON_CONTAINERS:  # json.loads would build ~60 B per one
                return await _send_json(send, 422, {"error": f"the body holds more than {MAX_JSON_CONTAINERS} JSON "
                                                             f"objects/arrays; no request needs that many"})

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)
        finally:  # answered, refused or cancelled: its bytes are free again
            budget.give(held, client)


app.add_middleware(Guard)


# ----------------------------------------------------------------------------------------- ingress

def _client(request: Request) -> str:
    """Who is asking (set by `Guard`): the key's id, or `anonymous` without keys."""
    return getattr(request.state, "client", auth.ANONYMOUS)


@serve.deployment(name="Api", max_ongoing_requests=ServeConfig().ongoing_limits()["Api"],  # build_app sets it
                  ray_actor_options={"num_cpus": 0.1},
                  health_check_period_s=10, graceful_shutdown_timeout_s=10)
@serve.ingress(app)
class Api:
    def __init__(self, cfg: dict, policy: DeploymentHandle, store: DeploymentHandle, embedder: DeploymentHandle,
                 rollouts: DeploymentHandle, key_digests: list | None = None):
        self.cfg = from_dict(ServeConfig, cfg)
        from steve1_ray.serving import inputs

        # read by `Guard` (module globals here are a pickled copy); digests only, never the keys
        inputs.RUNTIME.update(cfg=self.cfg, key_digests=[bytes(d) for d in key_digests or []])
        self.policy, self.store, self.embedder, self.rollouts = policy, store, embedder, rollouts
        self._info: dict | None = None
        self._embedder_info: dict | None = None
        self._page = index_html(self.cfg.default_cond_scale)  # fixed for the replica's life: built once

    async def _policy_info(self) -> dict:
        if self._info is None:
            self._info = await self.policy.info.remote()
        return self._info

    async def _goal(self, prompt: str | None, goal_embed, clip, prior_seed) -> tuple[np.ndarray, str | None]:
        given = [name for name, v in (("prompt", prompt), ("goal_embed", goal_embed), ("clip", clip)) if v]
        if len(given) != 1:
            raise InputError(422, f"give exactly one goal: prompt (text), goal_embed (numbers) or clip (frames); "
                                  f"got {given or 'none'}")
        dim = (await self._policy_info())["embed_dim"]
        if prompt:
            if not prompt.strip():
                raise InputError(422, "prompt is empty; describe the behaviour, e.g. 'chop down the tree'")
            return _fail(await self.embedder.embed_text.remote(prompt, prior_seed)), prompt
        if goal_embed:
            return check_embedding(goal_embed, dim), None
        if len(clip) > self.cfg.max_clip_frames:
            raise InputError(422, f"clip has {len(clip)} frames; send at most {self.cfg.max_clip_frames} "
                                  f"(the last 16 frames of the behaviour)")
        if self._embedder_info is None:
            self._embedder_info = await self.embedder.info.remote()
        frames = await asyncio.to_thread(self._clip_frames, clip, self._embedder_info["resolution"])
        return await self.embedder.embed_clip.remote(frames), None

    def _clip_frames(self, clip: list[str], resolution) -> list[np.ndarray]:
        """Decode (off the event loop) and shrink each frame at once to MineCLIP's input size, so full-size
        frames neither pile up here nor travel to the embedder (its own resize is then the identity)."""
        h, w = resolution
        return [cv2.resize(decode_image(f, self.cfg.max_image_pixels, f"clip[{i}]"), (w, h),
                           interpolation=cv2.INTER_LINEAR) for i, f in enumerate(clip)]

    # -- pages and meta --
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self):
        return HTMLResponse(self._page)

    @app.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
    async def healthz(self):
        """Liveness of every deployment (each answers a trivial call within 5 s)."""
        checks = {"policy": self.policy.info.remote(), "sessions": self.store.stats.remote(),
                  "embedder": self.embedder.info.remote(), "rollouts": self.rollouts.stats.remote()}
        out, ok = {}, True
        for name, resp in checks.items():
            try:
                out[name] = await asyncio.wait_for(resp, 5)
            except Exception as exc:
                ok, out[name] = False, f"{type(exc).__name__}: {exc}"
        return JSONResponse({"status": "ok" if ok else "degraded", **out}, status_code=200 if ok else 503)

    @app.get("/info", response_model=InfoOut, responses=ERRORS)
    async def info(self):
        """Model and limits."""
        c = self.cfg
        return {**(await self.policy.info.remote()), "default_cond_scale": c.default_cond_scale,
                "max_cond_scale": c.max_cond_scale, "max_sessions": c.max_sessions,
                "max_sessions_per_key": c.max_sessions_per_key, "session_ttl_s": c.session_ttl_s,
                "max_payload_bytes": c.max_payload_bytes, "max_inflight_bytes": c.max_inflight_bytes,
                "max_image_pixels": c.max_image_pixels,
                "max_clip_frames": c.max_clip_frames, "rollout_backend": c.world.backend,
                "rollout_max_steps": c.rollout_max_steps, "auth": bool(self._digests())}

    @staticmethod
    def _digests() -> list:
        from steve1_ray.serving import inputs

        return inputs.RUNTIME.get("key_digests") or []

    # -- sessions --
    @app.post("/sessions", status_code=201, response_model=CreatedSession, responses=ERRORS)
    async def create_session(self, body: CreateSession, request: Request):
        """Open a session: a goal (prompt, embedding or clip), a guidance scale and a seed -> session id."""
        scale = check_scale(self.cfg.default_cond_scale if body.cond_scale is None else body.cond_scale,
                            self.cfg.max_cond_scale)
        goal, prompt = await self._goal(body.prompt, body.goal_embed, body.clip, body.prior_seed)
        seed = body.seed if body.seed is not None else int(np.random.default_rng().integers(0, 2**31 - 1))
        created = _fail(await self.store.create.remote(goal, scale, seed, body.deterministic, prompt,
                                                       _client(request)))
        return {**created["session"], "expires_after_idle_s": self.cfg.session_ttl_s}

    @app.post("/sessions/{session_id}/act", response_model=ActionOut, responses=ERRORS)
    async def act(self, session_id: str, body: Observation, request: Request):
        """One step: an observation (any size; resized like the original) -> a MineRL action dict."""
        if body.image is None and body.pixels is None:
            raise InputError(422, "send the observation as `image` (base64 PNG/JPEG) or `pixels` + `shape`")
        pov = await asyncio.to_thread(self._observation, body)  # decode + resize off the event loop
        return _fail(await self.policy.options(session_id=session_id).act.remote(session_id, pov,
                                                                                 _client(request), body.step))

    def _observation(self, body: Observation) -> np.ndarray:
        if body.image is not None:
            pov = decode_image(body.image, self.cfg.max_image_pixels)
        else:
            pov = decode_pixels(body.pixels, body.shape, self.cfg.max_image_pixels)
        return resize_pov(pov)  # (128, 128, 3): what crosses to the policy replica

    @app.post("/sessions/{session_id}/reset", response_model=SessionOut, responses=ERRORS)
    async def reset(self, session_id: str, request: Request, body: Optional[ResetSession] = None):
        """Start the episode over: fresh memory for both streams (optionally a new scale or seed)."""
        scale = "keep" if body is None or body.cond_scale is None else check_scale(body.cond_scale,
                                                                                   self.cfg.max_cond_scale)
        seed = "keep" if body is None or body.seed is None else body.seed
        out = _fail(await self.store.reset.remote(session_id, scale, seed, _client(request)))
        await self.policy.options(session_id=session_id).drop.remote(session_id)
        return out["session"]

    @app.get("/sessions/{session_id}", response_model=SessionOut, responses=ERRORS)
    async def get_session(self, session_id: str, request: Request):
        return _fail(await self.store.get.remote(session_id, client=_client(request)))["session"]

    @app.delete("/sessions/{session_id}", response_model=DeletedOut, responses=ERRORS)
    async def delete_session(self, session_id: str, request: Request):
        out = _fail(await self.store.delete.remote(session_id, _client(request)))
        await self.policy.options(session_id=session_id).drop.remote(session_id)
        return out

    @app.post("/goals", response_model=GoalOut, responses=ERRORS)
    async def goal(self, body: GoalRequest):
        """The goal embedding a prompt or clip maps to (what a session would use)."""
        goal, _ = await self._goal(body.prompt, None, body.clip, body.prior_seed)
        return {"goal_embed": [float(x) for x in goal], "embed_dim": int(goal.size)}

    # -- rollouts (each visible only to the client that started it) --
    @app.post("/rollouts", status_code=202, response_model=RolloutOut, responses=ERRORS)
    async def start_rollout(self, body: StartRollout, request: Request):
        """Play an episode in the rollout world for a prompt; poll GET /rollouts/{id}."""
        c = self.cfg
        scale = check_scale(c.default_cond_scale if body.cond_scale is None else body.cond_scale, c.max_cond_scale)
        steps = c.rollout_default_steps if body.steps is None else body.steps
        if not 1 <= steps <= c.rollout_max_steps:
            raise InputError(422, f"steps must be in [1, {c.rollout_max_steps}] (rollout_max_steps), got {steps}")
        if bool(body.prompt and body.prompt.strip()) == bool(body.goal_embed):
            raise InputError(422, "give exactly one goal: a non-empty prompt or a goal_embed")
        spec = {"prompt": body.prompt, "cond_scale": scale, "steps": steps, "world_seed": body.world_seed,
                "policy_seed": body.policy_seed, "prior_seed": body.prior_seed, "goal_embed": None,
                "client": _client(request)}
        if body.goal_embed:
            spec["goal_embed"] = check_embedding(body.goal_embed, (await self._policy_info())["embed_dim"]).tolist()
        return _fail(await self.rollouts.start.remote(spec))

    @app.get("/rollouts", response_model=List[RolloutOut], responses=ERRORS)
    async def list_rollouts(self, request: Request):
        return await self.rollouts.list.remote(_client(request))

    @app.get("/rollouts/{rollout_id}", response_model=RolloutOut, responses=ERRORS)
    async def rollout_status(self, rollout_id: str, request: Request):
        return _fail(await self.rollouts.status.remote(rollout_id, _client(request)))

    @app.get("/rollouts/{rollout_id}/metrics", response_model=Dict[str, Any], responses=ERRORS)
    async def rollout_metrics(self, rollout_id: str, request: Request):
        return _fail(await self.rollouts.metrics.remote(rollout_id, _client(request)))

    @app.get("/rollouts/{rollout_id}/video.mp4", response_class=Response, responses={
        200: {"content": {"video/mp4": {}}, "description": "H.264 mp4 of the episode"}, **ERRORS})
    async def rollout_video(self, rollout_id: str, request: Request):
        data = _fail(await self.rollouts.video.remote(rollout_id, _client(request)))
        return Response(data, media_type="video/mp4")

    @app.get("/rollouts/{rollout_id}/frame.jpg", response_class=Response, responses={
        200: {"content": {"image/jpeg": {}}, "description": "the latest frame"},
        204: {"description": "no frame yet"}, **ERRORS})
    async def rollout_frame(self, rollout_id: str, request: Request):
        data = _fail(await self.rollouts.frame.remote(rollout_id, _client(request)))
        if not data:
            return Response(status_code=204)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


# ----------------------------------------------------------------------------------------- build

def _serve_http_host() -> str | None:
    """The host the running Serve proxies bind (a Serve config file's http_options), if Serve is up here."""
    import ray

    if not ray.is_initialized():  # never start or join a cluster just to ask
        return None
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client(raise_if_no_controller_running=False)
        return None if client is None else client.http_config.host
    except Exception:
        return "unknown (the Serve HTTP options could not be read)"  # fail closed: keys or insecure=true


def build_app(cfg: ServeConfig, policy_options: dict | None = None, api_options: dict | None = None):
    """The bound application graph for `serve.run`. Reads the API keys here (auth.py) and refuses a
    non-loopback bind without keys unless `insecure`; only the keys' digests go to the ingress.
    `policy_options` / `api_options`: more Serve options of those deployments (e.g. num_replicas=2)."""
    digests = auth.key_digests(cfg.api_keys_env, cfg.api_keys_file)
    for host in {cfg.host, _serve_http_host() or cfg.host}:
        auth.check_bind(host, bool(digests), cfg.insecure)
    d = to_dict(cfg)
    store = SessionStore.bind(d)
    limits = cfg.ongoing_limits()
    options = {**(STICKY if cfg.sticky_sessions else {}), "max_ongoing_requests": limits["PolicyServer"],
               **(policy_options or {})}  # e.g. num_replicas=2
    if cfg.reuse_freed_memory:  # glibc reads its tunables at process start (steve1_ray/hostmem.py)
        actor = dict(options.get("ray_actor_options") or PolicyServer.ray_actor_options or {})
        options["ray_actor_options"] = {**actor, "runtime_env": runtime_env(actor.get("runtime_env"))}
    policy = PolicyServer.options(**options).bind(d, store)
    embedder = GoalEmbedder.bind(d, None)
    rollouts = RolloutManager.bind(d)
    api = Api.options(**{"max_ongoing_requests": limits["Api"], **(api_options or {})})
    return api.bind(d, policy, store, embedder, rollouts, digests)


def app_builder(args: dict):
    """Serve `import_path` target: `args` are ServeConfig fields, plus optional `config` (a YAML file)."""
    args = dict(args or {})
    path = args.pop("config", None)
    try:
        base = load_config(ServeConfig, [path]) if path else None
        cfg = from_dict(ServeConfig, args, defaults=base)  # `world.x` in args keeps the file's other world fields
        return build_app(cfg)
    except (ConfigError, auth.AuthConfigError) as exc:
        raise ValueError(f"serve config: {exc}") from None
