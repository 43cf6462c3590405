"""The Serve application: FastAPI ingress (`Api`) over PolicyServer, SessionStore, GoalEmbedder, Rollouts.

    serve run serve/config.yaml          # or: steve1 serve [--config serve/config.yaml] [key=value ...]

Endpoints (OpenAPI docs at /docs): POST /sessions, POST /sessions/{id}/act, POST /sessions/{id}/reset,
GET|DELETE /sessions/{id}, POST /goals, POST /rollouts, GET /rollouts/{id}[/metrics|/video.mp4|/frame.jpg],
GET /healthz, GET /info, GET / (web page). Every client mistake is a 4xx whose `error` says what to fix.
"""
# No `from __future__ import annotations`: FastAPI must see the body models as classes, not strings.
import asyncio
import logging
from typing import Any, List, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from steve1_ray.agent import resize_pov
from steve1_ray.config import ConfigError, from_dict, load_config, to_dict
from steve1_ray.serving.config import ServeConfig
from steve1_ray.serving.inputs import InputError, check_embedding, check_scale, decode_image, decode_pixels
from steve1_ray.serving.page import INDEX_HTML
from steve1_ray.serving.policy_server import STICKY, GoalEmbedder, PolicyServer, SessionStore
from steve1_ray.serving.rollouts import RolloutManager

log = logging.getLogger("ray.serve")
PUBLIC_PATHS = {"/", "/healthz", "/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"}

app = FastAPI(title="STEVE-1 prompt-to-action service",
              description="Classifier-free-guided STEVE-1 policy on Ray Serve: sessions, batched steps, rollouts.",
              version="0.1.0")


# ----------------------------------------------------------------------------------------- schemas

class CreateSession(BaseModel):
    prompt: Optional[str] = Field(None, description="Text instruction (MineCLIP text encoder + prior).",
                                  max_length=2000)
    goal_embed: Optional[List[float]] = Field(None, description="A goal embedding of width embed_dim.")
    clip: Optional[List[str]] = Field(None, description="Visual goal: 1..16 base64 PNG/JPEG frames (oldest first).")
    cond_scale: Optional[float] = Field(None, description="Guidance scale (default: the server's, 6.0).")
    seed: Optional[int] = Field(None, description="Seed of the session's action sampling (random if unset).")
    prior_seed: Optional[int] = Field(0, description="Seed of the prior sample for a text prompt.")
    deterministic: bool = Field(False, description="Take the argmax action instead of sampling.")


class Observation(BaseModel):
    image: Optional[str] = Field(None, description="base64 PNG/JPEG frame, any size (resized to 128x128).")
    pixels: Optional[str] = Field(None, description="base64 raw uint8 RGB bytes (lossless), with `shape`.")
    shape: Optional[List[int]] = Field(None, description="[height, width, 3] of `pixels`.")


class ResetSession(BaseModel):
    cond_scale: Optional[float] = None
    seed: Optional[int] = None


class GoalRequest(BaseModel):
    prompt: Optional[str] = Field(None, max_length=2000)
    clip: Optional[List[str]] = None
    prior_seed: Optional[int] = 0


class StartRollout(BaseModel):
    prompt: Optional[str] = Field(None, max_length=2000)
    goal_embed: Optional[List[float]] = None
    cond_scale: Optional[float] = None
    steps: Optional[int] = Field(None, description="Episode length (default rollout_default_steps).")
    world_seed: Optional[int] = Field(None, ge=0)
    policy_seed: Optional[int] = None
    prior_seed: Optional[int] = 0


# ----------------------------------------------------------------------------------------- errors

def _fail(result: Any) -> Any:
    """Results from deployments are plain values, or {"error", "http_status"} for a client mistake."""
    if isinstance(result, dict) and "http_status" in result:
        raise InputError(int(result["http_status"]), str(result["error"]))
    return result


@app.exception_handler(InputError)
async def _input_error(request: Request, exc: InputError):
    return JSONResponse({"error": exc.message}, status_code=exc.status)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError):
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return JSONResponse({"error": "bad request body; " + "; ".join(parts) + " (see /docs for the schema)"},
                        status_code=422)


@app.middleware("http")
async def _limits_and_auth(request: Request, call_next):
    from steve1_ray.serving import inputs  # the real module: Serve pickles this app by value

    cfg: ServeConfig | None = inputs.RUNTIME.get("cfg")
    if cfg is not None:
        if cfg.api_key and request.url.path not in PUBLIC_PATHS:
            given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
            if given != cfg.api_key:
                return JSONResponse({"error": "missing or wrong API key; send the header x-api-key: <key>"},
                                    status_code=401)
        if request.method in ("POST", "PUT", "PATCH"):
            length = request.headers.get("content-length")
            if length is not None and length.isdigit():
                size = int(length)
            else:
                size = len(await request.body())
            if size > cfg.max_payload_bytes:
                return JSONResponse({"error": f"request body is {size} bytes; the limit is {cfg.max_payload_bytes} "
                                              f"(max_payload_bytes): send a smaller (e.g. 128x128 JPEG) image"},
                                    status_code=413)
    return await call_next(request)


# ----------------------------------------------------------------------------------------- ingress

@serve.deployment(name="Api", max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.1},
                  health_check_period_s=10, graceful_shutdown_timeout_s=10)
@serve.ingress(app)
class Api:
    def __init__(self, cfg: dict, policy: DeploymentHandle, store: DeploymentHandle, embedder: DeploymentHandle,
                 rollouts: DeploymentHandle):
        self.cfg = from_dict(ServeConfig, cfg)
        from steve1_ray.serving import inputs

        inputs.RUNTIME["cfg"] = self.cfg  # read by the middleware (module globals here are a pickled copy)
        self.policy, self.store, self.embedder, self.rollouts = policy, store, embedder, rollouts
        self._info: dict | None = None

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
        frames = [decode_image(f, self.cfg.max_image_pixels, f"clip[{i}]") for i, f in enumerate(clip)]
        return await self.embedder.embed_clip.remote(frames), None

    # -- pages and meta --
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self):
        return HTMLResponse(INDEX_HTML)

    @app.get("/healthz")
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

    @app.get("/info")
    async def info(self):
        """Model and limits."""
        c = self.cfg
        return {**(await self.policy.info.remote()), "default_cond_scale": c.default_cond_scale,
                "max_sessions": c.max_sessions, "session_ttl_s": c.session_ttl_s,
                "max_payload_bytes": c.max_payload_bytes, "rollout_backend": c.world.backend,
                "rollout_max_steps": c.rollout_max_steps, "auth": bool(c.api_key)}

    # -- sessions --
    @app.post("/sessions", status_code=201)
    async def create_session(self, body: CreateSession):
        """Open a session: a goal (prompt, embedding or clip), a guidance scale and a seed -> session id."""
        scale = check_scale(self.cfg.default_cond_scale if body.cond_scale is None else body.cond_scale,
                            self.cfg.max_cond_scale)
        goal, prompt = await self._goal(body.prompt, body.goal_embed, body.clip, body.prior_seed)
        seed = body.seed if body.seed is not None else int(np.random.default_rng().integers(0, 2**31 - 1))
        created = _fail(await self.store.create.remote(goal, scale, seed, body.deterministic, prompt))
        return {**created["session"], "expires_after_idle_s": self.cfg.session_ttl_s}

    @app.post("/sessions/{session_id}/act")
    async def act(self, session_id: str, body: Observation):
        """One step: an observation (any size; resized like the original) -> a MineRL action dict."""
        if body.image is None and body.pixels is None:
            raise InputError(422, "send the observation as `image` (base64 PNG/JPEG) or `pixels` + `shape`")
        pov = await asyncio.to_thread(self._observation, body)  # decode + resize off the event loop
        return _fail(await self.policy.options(session_id=session_id).act.remote(session_id, pov))

    def _observation(self, body: Observation) -> np.ndarray:
        if body.image is not None:
            pov = decode_image(body.image, self.cfg.max_image_pixels)
        else:
            pov = decode_pixels(body.pixels, body.shape, self.cfg.max_image_pixels)
        return resize_pov(pov)  # (128, 128, 3): what crosses to the policy replica

    @app.post("/sessions/{session_id}/reset")
    async def reset(self, session_id: str, body: Optional[ResetSession] = None):
        """Start the episode over: fresh memory for both streams (optionally a new scale or seed)."""
        scale = "keep" if body is None or body.cond_scale is None else check_scale(body.cond_scale,
                                                                                   self.cfg.max_cond_scale)
        seed = "keep" if body is None or body.seed is None else body.seed
        out = _fail(await self.store.reset.remote(session_id, scale, seed))
        await self.policy.options(session_id=session_id).drop.remote(session_id)
        return out["session"]

    @app.get("/sessions/{session_id}")
    async def get_session(self, session_id: str):
        return _fail(await self.store.get.remote(session_id))["session"]

    @app.delete("/sessions/{session_id}")
    async def delete_session(self, session_id: str):
        out = _fail(await self.store.delete.remote(session_id))
        await self.policy.options(session_id=session_id).drop.remote(session_id)
        return out

    @app.post("/goals")
    async def goal(self, body: GoalRequest):
        """The goal embedding a prompt or clip maps to (what a session would use)."""
        goal, _ = await self._goal(body.prompt, None, body.clip, body.prior_seed)
        return {"goal_embed": [float(x) for x in goal], "embed_dim": int(goal.size)}

    # -- rollouts --
    @app.post("/rollouts", status_code=202)
    async def start_rollout(self, body: StartRollout):
        """Play an episode in the rollout world for a prompt; poll GET /rollouts/{id}."""
        c = self.cfg
        scale = check_scale(c.default_cond_scale if body.cond_scale is None else body.cond_scale, c.max_cond_scale)
        steps = c.rollout_default_steps if body.steps is None else body.steps
        if not 1 <= steps <= c.rollout_max_steps:
            raise InputError(422, f"steps must be in [1, {c.rollout_max_steps}] (rollout_max_steps), got {steps}")
        if bool(body.prompt and body.prompt.strip()) == bool(body.goal_embed):
            raise InputError(422, "give exactly one goal: a non-empty prompt or a goal_embed")
        spec = {"prompt": body.prompt, "cond_scale": scale, "steps": steps, "world_seed": body.world_seed,
                "policy_seed": body.policy_seed, "prior_seed": body.prior_seed, "goal_embed": None}
        if body.goal_embed:
            spec["goal_embed"] = check_embedding(body.goal_embed, (await self._policy_info())["embed_dim"]).tolist()
        return _fail(await self.rollouts.start.remote(spec))

    @app.get("/rollouts")
    async def list_rollouts(self):
        return await self.rollouts.list.remote()

    @app.get("/rollouts/{rollout_id}")
    async def rollout_status(self, rollout_id: str):
        return _fail(await self.rollouts.status.remote(rollout_id))

    @app.get("/rollouts/{rollout_id}/metrics")
    async def rollout_metrics(self, rollout_id: str):
        return _fail(await self.rollouts.metrics.remote(rollout_id))

    @app.get("/rollouts/{rollout_id}/video.mp4")
    async def rollout_video(self, rollout_id: str):
        data = _fail(await self.rollouts.video.remote(rollout_id))
        return Response(data, media_type="video/mp4")

    @app.get("/rollouts/{rollout_id}/frame.jpg")
    async def rollout_frame(self, rollout_id: str):
        data = _fail(await self.rollouts.frame.remote(rollout_id))
        if not data:
            return Response(status_code=204)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


# ----------------------------------------------------------------------------------------- build

def build_app(cfg: ServeConfig):
    """The bound application graph for `serve.run`."""
    d = to_dict(cfg)
    store = SessionStore.bind(d)
    policy = (PolicyServer.options(**STICKY) if cfg.sticky_sessions else PolicyServer).bind(d, store)
    embedder = GoalEmbedder.bind(d, None)
    rollouts = RolloutManager.bind(d)
    return Api.bind(d, policy, store, embedder, rollouts)


def app_builder(args: dict):
    """Serve `import_path` target: `args` are ServeConfig fields, plus optional `config` (a YAML file)."""
    args = dict(args or {})
    path = args.pop("config", None)
    try:
        base = to_dict(load_config(ServeConfig, [path])) if path else {}
        cfg = from_dict(ServeConfig, {**base, **args})
    except ConfigError as exc:
        raise ValueError(f"serve config: {exc}") from None
    return build_app(cfg)
