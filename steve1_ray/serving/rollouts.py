"""Rollouts: a pool of actors that play an episode for a prompt through the served policy.

`RolloutWorker` (a Ray actor) owns one world (crafter by default, MineRL when installed), creates a
session like any client, steps it through the `PolicyServer` deployment (so it shares batches with HTTP
sessions), writes an mp4 with the prompt drawn on the frames, and keeps the latest frame for the web
page. `RolloutManager` (a Serve deployment) owns the pool, queues starts, and keeps finished results.
"""
from __future__ import annotations

import asyncio
import collections
import io
import threading
import time
import uuid
from typing import Any

import cv2
import numpy as np
import ray
from ray import serve

from steve1_ray.agent import resize_pov
from steve1_ray.config import from_dict
from steve1_ray.serving.config import ServeConfig
from steve1_ray.serving.sessions import error, from_earlier_boot, new_id
from steve1_ray.world.video import Mp4Writer, draw_prompt

CALL_TIMEOUT_S = 60.0
"""Longest wait for one call to another deployment (a step, a prompt's goal); a rollout waits its steps x 2 s more"""


# ----------------------------------------------------------------------------------------- video

def jpeg(frame: np.ndarray, quality: int = 80) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data.tobytes() if ok else b""


def _counts(d: Any) -> dict:
    return {str(k): (int(v) if isinstance(v, (int, np.integer, bool)) else float(v)) for k, v in dict(d or {}).items()}


# ----------------------------------------------------------------------------------------- worker

@ray.remote(max_concurrency=4)
class RolloutWorker:
    """Plays one episode at a time in its own world; `progress()`/`frame()` answer while it plays."""

    def __init__(self, cfg: dict, app_name: str):
        self.cfg = from_dict(ServeConfig, cfg)
        self.app_name = app_name
        self.env = self.cfg.world.make()
        self.lock = threading.Lock()
        self.latest: np.ndarray | None = None
        self.progress_ = {}

    def _handle(self, name: str):
        return serve.get_deployment_handle(name, app_name=self.app_name)

    def progress(self) -> dict:
        with self.lock:
            return dict(self.progress_)

    def frame(self) -> bytes:
        with self.lock:
            latest = self.latest
        return jpeg(latest) if latest is not None else b""

    def run(self, rollout_id: str, spec: dict) -> dict:
        policy, store = self._handle("PolicyServer"), self._handle("SessionStore")
        prompt = spec.get("prompt") or "(goal embedding)"
        if spec.get("goal_embed") is not None:
            goal = np.asarray(spec["goal_embed"], np.float32)
        else:
            goal = self._handle("GoalEmbedder").embed_text.remote(spec["prompt"], spec.get("prior_seed", 0)).result(
                timeout_s=CALL_TIMEOUT_S)
        created = store.create.remote(goal, spec["cond_scale"], spec.get("policy_seed") or 0, False,
                                      prompt, spec.get("client")).result(timeout_s=CALL_TIMEOUT_S)  # client's quota
        if "error" in created:
            raise RuntimeError(created["error"])
        sid = created["session"]["session_id"]
        writer = Mp4Writer(fps=self.cfg.video_fps, height=self.cfg.video_height, crf=26, preset="ultrafast")
        reward_sum, t0, steps, info = 0.0, time.time(), 0, {}
        try:
            obs = self.env.reset(seed=spec.get("world_seed"))
            writer.add(draw_prompt(obs["pov"], prompt, 0))
            for step in range(1, spec["steps"] + 1):
                res = policy.options(session_id=sid).act.remote(sid, resize_pov(obs["pov"])).result(
                    timeout_s=CALL_TIMEOUT_S)
                if "error" in res:
                    raise RuntimeError(f"policy: {res['error']}")
                action = dict(res["action"])
                action["camera"] = np.asarray(action["camera"], np.float32)
                obs, reward, done, info = self.env.step(action)
                reward_sum += float(reward)
                steps = step
                frame = draw_prompt(obs["pov"], prompt, step)
                writer.add(frame)
                with self.lock:
                    self.latest = frame
                    self.progress_ = {"rollout_id": rollout_id, "step": step, "steps": spec["steps"],
                                      "reward": reward_sum, "achievements": _counts(info.get("achievements")),
                                      "inventory": _counts(info.get("inventory")),
                                      "steps_per_s": step / max(time.time() - t0, 1e-6)}
                if done:
                    break
        finally:
            store.delete.remote(sid)
            policy.options(session_id=sid).drop.remote(sid)
        video = writer.finish()
        metrics = {"prompt": prompt, "cond_scale": spec["cond_scale"], "steps": steps, "reward": reward_sum,
                   "achievements": _counts(info.get("achievements")),
                   "achievements_unlocked": sorted(k for k, v in _counts(info.get("achievements")).items() if v > 0),
                   "inventory": _counts(info.get("inventory")), "world": self.cfg.world.backend,
                   "world_seed": spec.get("world_seed"), "seconds": time.time() - t0,
                   "video_frames": writer.frames}
        return {"metrics": metrics, "video": video}

    def close(self) -> None:
        self.env.close()


# ----------------------------------------------------------------------------------------- manager

@serve.deployment(name="Rollouts", num_replicas=1, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.05},
                  health_check_period_s=10, graceful_shutdown_timeout_s=10)
class RolloutManager:
    """Owns the rollout actors; start -> queued -> running -> done | failed; keeps the last results. Every
    method is async: they run one at a time on the replica's event loop, never beside one another in threads."""

    def __init__(self, cfg: dict):
        self.cfg_dict = cfg
        self.cfg = from_dict(ServeConfig, cfg)
        try:
            self.app_name = serve.get_replica_context().app_name
        except Exception:
            self.app_name = "steve1"
        self.workers = [self._new_worker() for _ in range(self.cfg.rollout_workers)]
        self.idle = list(range(len(self.workers)))
        self.queue: collections.deque[str] = collections.deque()
        self.rollouts: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self.running: dict[str, int] = {}
        self._tasks: set = set()
        self.boot = uuid.uuid4().hex[:6]  # the first 6 hex digits of this manager's rollout ids

    def _new_worker(self):
        return RolloutWorker.options(num_cpus=self.cfg.rollout_num_cpus).remote(self.cfg_dict, self.app_name)

    def _public(self, rec: dict) -> dict:
        return {k: v for k, v in rec.items() if k not in ("video", "spec", "last_frame")} | {
            "prompt": rec["spec"].get("prompt"), "cond_scale": rec["spec"]["cond_scale"]}

    def _get(self, rid: str, client: str | None) -> dict | None:
        """The rollout, if `client` started it (None: internal, sees all); others' are as unknown as missing ones."""
        rec = self.rollouts.get(rid)
        if rec is None or (client is not None and rec["spec"].get("client") not in (None, client)):
            return None
        return rec

    async def start(self, spec: dict) -> dict:
        if not self.workers:
            return error(503, "this deployment has rollout_workers=0; set rollout_workers >= 1 in the serve config")
        if len(self.queue) >= self.cfg.rollout_queue:
            return error(429, f"{len(self.queue)} rollouts are already waiting (rollout_queue="
                              f"{self.cfg.rollout_queue}); retry when one finishes")
        rid = new_id(self.boot, 16)
        self.rollouts[rid] = {"rollout_id": rid, "status": "queued", "spec": spec, "created": time.time(),
                              "step": 0, "steps": spec["steps"], "achievements": {}, "inventory": {}}
        self.queue.append(rid)
        self._dispatch()
        self._trim()
        return self._public(self.rollouts[rid])

    def _dispatch(self) -> None:
        while self.idle and self.queue:
            w, rid = self.idle.pop(), self.queue.popleft()
            rec = self.rollouts[rid]
            rec["status"], rec["started"] = "running", time.time()
            self.running[rid] = w
            ref = self.workers[w].run.remote(rid, rec["spec"])
            task = asyncio.get_running_loop().create_task(self._watch(rid, w, ref))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _watch(self, rid: str, w: int, ref) -> None:
        rec = self.rollouts[rid]
        try:
            # a world or a policy call that hangs must not hold the actor forever
            result = await asyncio.wait_for(ref, timeout=CALL_TIMEOUT_S + 2.0 * rec["steps"])
            rec.update(status="done", video=result["video"], metrics=result["metrics"],
                       step=result["metrics"]["steps"], achievements=result["metrics"]["achievements"],
                       inventory=result["metrics"]["inventory"], reward=result["metrics"]["reward"])
        except Exception as exc:
            rec.update(status="failed", error=f"{type(exc).__name__}: {str(exc)[-500:]}")
            if isinstance(exc, asyncio.TimeoutError):  # stuck: stop it and start a fresh world
                ray.kill(self.workers[w])
            if isinstance(exc, (ray.exceptions.RayActorError, asyncio.TimeoutError)):  # crashed or stuck: replace
                self.workers[w] = self._new_worker()
        finally:
            rec["finished"] = time.time()
            self.running.pop(rid, None)
            self.idle.append(w)
            self._dispatch()

    def _trim(self) -> None:
        done = [r for r, rec in self.rollouts.items() if rec["status"] in ("done", "failed")]
        for rid in done[:max(0, len(done) - self.cfg.rollout_keep)]:
            del self.rollouts[rid]

    def _missing(self, rid: str) -> dict:
        if from_earlier_boot(rid, self.boot, 16):
            return error(410, f"rollout {rid} was started before the rollout manager restarted (server "
                              f"restarted: its results are gone); start it again with POST /rollouts")
        return error(404, f"unknown rollout {rid!r} (only the last {self.cfg.rollout_keep} finished ones are "
                          f"kept); start one with POST /rollouts")

    async def status(self, rid: str, client: str | None = None) -> dict:
        rec = self._get(rid, client)
        if rec is None:
            return self._missing(rid)
        if rid in self.running:
            try:
                prog = await asyncio.wait_for(self.workers[self.running[rid]].progress.remote(), 5)
                if prog.get("rollout_id") == rid:
                    rec.update({k: prog[k] for k in ("step", "reward", "achievements", "inventory", "steps_per_s")})
            except Exception:
                pass
        return self._public(rec)

    async def frame(self, rid: str, client: str | None = None) -> bytes | dict:
        rec = self._get(rid, client)
        if rec is None:
            return self._missing(rid)
        if rid in self.running:
            return await self.workers[self.running[rid]].frame.remote()
        if rec["status"] == "done" and rec.get("video"):
            return rec.setdefault("last_frame", _last_frame_jpeg(rec["video"]))
        return b""

    async def video(self, rid: str, client: str | None = None) -> bytes | dict:
        rec = self._get(rid, client)
        if rec is None:
            return self._missing(rid)
        if rec["status"] != "done":
            return error(409, f"rollout {rid} is {rec['status']}; the mp4 exists once status is 'done'")
        return rec["video"]

    async def metrics(self, rid: str, client: str | None = None) -> dict:
        rec = self._get(rid, client)
        if rec is None:
            return self._missing(rid)
        if rec["status"] != "done":
            return error(409, f"rollout {rid} is {rec['status']}; metrics exist once status is 'done'"
                         + (f" ({rec.get('error')})" if rec.get("error") else ""))
        return rec["metrics"]

    async def list(self, client: str | None = None) -> list:
        """The rollouts `client` started (None: all)."""
        return [self._public(r) for r in self.rollouts.values()
                if client is None or r["spec"].get("client") in (None, client)]

    async def stats(self) -> dict:
        return {"workers": len(self.workers), "idle": len(self.idle), "queued": len(self.queue),
                "running": len(self.running)}

    def __del__(self):  # graceful shutdown: stop the worlds
        for w in getattr(self, "workers", []):
            try:
                ray.kill(w)
            except Exception:
                pass


def _last_frame_jpeg(video: bytes) -> bytes:
    import av

    last = None
    with av.open(io.BytesIO(video)) as c:
        for fr in c.decode(video=0):
            last = fr
    return jpeg(last.to_ndarray(format="rgb24")) if last is not None else b""
