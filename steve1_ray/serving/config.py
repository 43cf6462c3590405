"""`ServeConfig`: what the served application loads and the limits it enforces.

Filled from the `args:` (and `http_options` host/port) of `serve/config.yaml`, or `steve1 serve --config ...
key=value`. Deployment sizes (replicas, autoscaling) live in the Serve config's `deployments:` list, where Serve
itself reads them; `max_ongoing_requests` of the Api and the PolicyServer follows `max_sessions`
(`ServeConfig.ongoing_limits`), the others' in their decorators or that list.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from steve1_ray.config import check
from steve1_ray.world.config import WorldConfig

# Hard bounds the HTTP schema states (/openapi.json); a config may narrow them, never widen them.
MAX_COND_SCALE = 50.0
MAX_CLIP_FRAMES = 64
MAX_ROLLOUT_STEPS = 100_000
API_HEADROOM = 64  # requests beside the sessions' steps (create, reset, info, health, goals, rollouts): ongoing_limits


@dataclass
class ServeConfig:
    """What the prompt-to-action service loads, the limits it enforces and where it listens."""

    MOVED_KEYS: ClassVar[dict[str, str]] = {"rollout_backend": "world.backend",
                                            "rollout_env_kwargs": "world (world.zombie_rate=..., world.tree_logs=...)",
                                            "api_key": "the STEVE1_API_KEYS environment variable or api_keys_file "
                                                       "(keys stay out of configs, command lines and logs)"}
    """keys of older configs and where they live now (named in the error instead of the list of known keys)"""

    # --- models
    policy: str = "debug"
    """Policy architecture: a preset name (debug, 1x, 2x, 3x), an original `.model` file, or `released` (the
    embedded world's released STEVE-1 policy: `steve1.weights` with `steve1.model` where the release has one, else
    with `foundation.model`)."""
    weights: Optional[str] = None
    """Policy weights: the original `steve1.weights` or one of ours; None = random init (debug only)."""
    checkpoint: Optional[str] = None
    """A training checkpoint directory of ours; overrides `policy`/`weights` when set."""
    mineclip: Optional[str] = None
    """MineCLIP weights (`attn.pth`, ours, or `released`: the embedded world's); None = the randomly initialised
    `mineclip_preset`."""
    mineclip_preset: str = "debug"
    """MineCLIP architecture when `mineclip` is None or one of ours (attn | debug)."""
    prior: Optional[str] = None
    """CVAE prior weights (`steve1_prior.pt`, ours, or `released`); None = a random prior of the right width."""
    device: str = "cpu"
    """torch device of the policy/embedder replicas (cpu, cuda)."""
    precision: str = "fp32"
    """Precision of the policy's forward: fp32 (the original's numbers) or bf16 (autocast; 1.8x the actions/s of
    fp32 at 2x on a CPU with AMX, guided logits within about 0.2 of fp32's: benchmarks/RESULTS.md)."""
    # --- sessions
    default_cond_scale: float = 6.0
    """Guidance scale when a session does not give one (the original: 6 for text, 7 for visual; `serve/config.yaml`,
    which serves the embedded world's released models, sets 2: benchmarks/RESULTS.md, session 39). The web page's
    slider starts at it."""
    max_cond_scale: float = 50.0
    """Largest accepted |cond_scale| (at most 50, the schema's bound)."""
    max_sessions: int = 256
    """Open sessions allowed at once; more get HTTP 429."""
    max_sessions_per_key: int = 128
    """Open sessions one API key (or, without keys, the anonymous client) may hold; more get HTTP 429."""
    session_ttl_s: float = 600.0
    """A session idle this long expires (HTTP 410 afterwards)."""
    state_sync_every: int = 1
    """Copy a session's recurrent state to the session store every N steps (0 = never)."""
    # --- batching
    max_batch_size: int = 16
    """Sessions stepped together in one forward pass."""
    batch_wait_timeout_s: float = 0.005
    """How long a lone request waits for company before its batch runs (the least; see `batch_wait_fraction`)."""
    batch_wait_fraction: float = 0.3
    """The wait grows to this fraction of a full batch's policy step (the last step's time per session ×
    `max_batch_size`; at most `max_batch_wait_s`): a slow model (2x on 2 CPU cores: ~3 s for 16 sessions) then
    gathers fuller batches while its clients' next requests arrive, at some latency; a fast one keeps
    `batch_wait_timeout_s`. 0 = always that (policy_server.adapted_batch_wait, benchmarks/RESULTS.md)."""
    max_batch_wait_s: float = 0.5
    """The longest the adapted wait gets (`batch_wait_timeout_s` wins if it is longer)."""
    batch_size_rule: str = "auto"
    """`sessions`: the sessions that stepped lately (and those waiting) are stepped in `batch_groups` groups in
    turn, so one group's answers and next observations travel while another group steps; a batch takes the
    waiting requests once a group's worth is there (at most `max_batch_size`). `fixed`: every batch waits for
    `max_batch_size` requests or its wait, whichever comes first. `auto`: `sessions` on CPU, `fixed` on CUDA.
    Either way a batch is formed when the replica is free to step it (policy_server.StepQueue), never earlier.
    Numbers: benchmarks/RESULTS.md, session 19."""
    batch_groups: int = 2
    """With `batch_size_rule` `sessions`: the groups the active sessions step in, in turn (1 = all together,
    lockstep; 2 = two halves, each stepping while the other's round trip runs)."""
    sticky_sessions: bool = True
    """Route each session to one PolicyServer replica (Ray's experimental ConsistentHashRouter);
    False = Serve's default router (sessions still stay exact: a replica without the state loads it)."""
    torch_threads: int = 0
    """Torch threads of each PolicyServer replica; 0 = what Ray gives it (its `num_cpus`, at least 1: a replica
    of 0.5 CPU steps on one thread). On a box where the policy is the main work, set it to the cores it may use
    (2x at 16 sessions on 2 cores: 2 threads; benchmarks/RESULTS.md)."""
    reuse_freed_memory: bool = True
    """Each PolicyServer replica keeps the memory a batch frees for the next batch instead of returning it to the
    OS (glibc tunables in its environment, steve1_ray/hostmem.py; serve_config.yaml sets the same for its
    PolicyServer deployment). Its RSS then stays at its peak; false = glibc's defaults."""
    two_pass_baseline: bool = False
    """Benchmark only: step sessions one at a time with two batch-1 forwards each (the original's
    computation) instead of batched guided steps; use with max_batch_size=1."""
    # --- HTTP
    max_payload_bytes: int = 8 * 1024 * 1024
    """Largest request body accepted (HTTP 413 beyond)."""
    max_inflight_bytes: int = 512 * 1024 * 1024
    """Request bodies one `Api` replica holds at once, all clients together, one client (API key) at most a quarter
    of it; a body that would go past either gets HTTP 503 with Retry-After. A body's declared Content-Length is
    reserved before it is read. The Api admits every session's step at once (`ongoing_limits`), so without this as
    many 8 MiB bodies could be held; a 640x360 JPEG step is ~0.1 MB. Raw bytes: parsing a body (its JSON string,
    the decoded image) costs about twice more while it lasts, and each Api replica has its own budget."""
    max_image_pixels: int = 1024 * 1024
    """Largest observation or clip image (width x height, read from its header before decoding); 1 MP holds a
    640x360 MineRL frame or a 1280x720 screenshot, the agent sees 128x128."""
    max_clip_frames: int = 16
    """Frames in a visual goal clip (MineCLIP windows are 16 frames; at most 64)."""
    api_keys_env: str = "STEVE1_API_KEYS"
    """Environment variable with the API keys (comma-separated), read where the app is built; with keys, every
    request except the page, /healthz and the docs needs `x-api-key: <key>` (docs/serving.md)."""
    api_keys_file: Optional[str] = None
    """A file with API keys, one per line (e.g. a mounted Kubernetes Secret); adds to `api_keys_env`."""
    insecure: bool = False
    """Allow a non-loopback `host` with no API key (anyone who reaches the port may use the service)."""
    host: str = "127.0.0.1"
    """HTTP host `steve1 serve` binds (a Serve config file's `http_options.host` sets it too)."""
    port: int = 8000
    """HTTP port `steve1 serve` binds (a Serve config file's `http_options.port` sets it too)."""
    app_name: str = "steve1"
    """Serve application name (`steve1 serve`)."""
    blocking: bool = True
    """`steve1 serve` waits until Ctrl-C / SIGTERM, then deletes the app; false = deploy and return."""
    # --- rollouts
    rollout_workers: int = 2
    """Rollout actors in the pool."""
    world: WorldConfig = field(default_factory=WorldConfig)
    """The world the rollout actors play in (`world.backend=minerl` where MineRL is installed; a policy trained
    in a world with 4-log trees plays best in that world: `world.tree_logs=4`)."""
    rollout_max_steps: int = 1000
    """Largest episode length a rollout may ask for."""
    rollout_default_steps: int = 200
    """Episode length of a rollout request that gives no `steps`."""
    rollout_queue: int = 8
    """Rollouts allowed to wait for a free actor; more get HTTP 429."""
    rollout_keep: int = 32
    """Finished rollouts (metrics + mp4) kept in memory."""
    rollout_num_cpus: float = 0.25
    """CPUs Ray reserves for each rollout actor."""
    video_fps: int = 20
    """Frame rate of the rollout mp4 (20 = real time: the worlds step 20 times per second)."""
    video_height: int = 360
    """Height of the rollout mp4 (width follows the world's aspect ratio)."""

    def __post_init__(self):
        check(self.max_sessions >= 1, f"max_sessions must be >= 1, got {self.max_sessions}")
        check(self.max_sessions_per_key >= 1, f"max_sessions_per_key must be >= 1, got {self.max_sessions_per_key}")
        check(0 <= self.max_cond_scale <= MAX_COND_SCALE,
              f"max_cond_scale must be in [0, {MAX_COND_SCALE}], got {self.max_cond_scale}")
        # a session without a scale and the page's slider take it: refused here, not in every request
        check(math.isfinite(self.default_cond_scale) and abs(self.default_cond_scale) <= self.max_cond_scale,
              f"default_cond_scale must be a finite number within max_cond_scale {self.max_cond_scale}, "
              f"got {self.default_cond_scale}")
        check(1 <= self.max_clip_frames <= MAX_CLIP_FRAMES,
              f"max_clip_frames must be in [1, {MAX_CLIP_FRAMES}], got {self.max_clip_frames}")
        check(self.max_image_pixels >= 128 * 128, f"max_image_pixels must be >= 16384, got {self.max_image_pixels}")
        check(self.session_ttl_s > 0, f"session_ttl_s must be > 0, got {self.session_ttl_s}")
        check(self.state_sync_every >= 0, f"state_sync_every must be >= 0, got {self.state_sync_every}")
        check(0 <= self.torch_threads <= 1024, f"torch_threads must be in [0, 1024], got {self.torch_threads}")
        check(self.max_batch_size >= 1, f"max_batch_size must be >= 1, got {self.max_batch_size}")
        check(self.batch_wait_timeout_s >= 0,
              f"batch_wait_timeout_s must be >= 0, got {self.batch_wait_timeout_s}")
        check(0 <= self.batch_wait_fraction <= 1,
              f"batch_wait_fraction must be in [0, 1], got {self.batch_wait_fraction}")
        check(self.max_batch_wait_s >= 0, f"max_batch_wait_s must be >= 0, got {self.max_batch_wait_s}")
        check(1 <= self.batch_groups <= 64, f"batch_groups must be in [1, 64], got {self.batch_groups}")
        check(self.batch_size_rule in ("auto", "sessions", "fixed"),
              f"batch_size_rule must be auto, sessions or fixed, got {self.batch_size_rule!r}")
        check(self.max_payload_bytes >= 1024, f"max_payload_bytes must be >= 1024, got {self.max_payload_bytes}")
        check(self.max_inflight_bytes >= self.max_payload_bytes,
              f"max_inflight_bytes {self.max_inflight_bytes} must be >= max_payload_bytes {self.max_payload_bytes}")
        check(self.rollout_workers >= 0, f"rollout_workers must be >= 0, got {self.rollout_workers}")
        check(self.rollout_max_steps <= MAX_ROLLOUT_STEPS,
              f"rollout_max_steps must be <= {MAX_ROLLOUT_STEPS}, got {self.rollout_max_steps}")
        check(1 <= self.rollout_default_steps <= self.rollout_max_steps,
              f"rollout_default_steps {self.rollout_default_steps} must be in [1, rollout_max_steps="
              f"{self.rollout_max_steps}]")
        check(self.video_height >= 16 and self.video_height % 2 == 0,
              f"video_height must be an even number >= 16, got {self.video_height}")
        check(self.precision in ("fp32", "bf16"), f"precision must be fp32 or bf16, got {self.precision!r}")
        check(self.device.split(":")[0] in ("cpu", "cuda"), f"device must be cpu or cuda[:i], got {self.device!r}")
        check(0 < self.port < 65536, f"port must be in 1..65535, got {self.port}")

    def ongoing_limits(self) -> dict[str, int]:
        """`max_ongoing_requests` of the two deployments every step passes through, from the session limit.

        A session has one step in flight, so both admit every session's step at once: the Api all of them plus
        room for the other endpoints, the policy replica all of them (waiting in its `StepQueue`, in order).
        Both keep `API_HEADROOM` more for the calls beside the steps (create, reset, delete, info, health, a
        retried step). Serve's router holds a request that finds every replica at its cap and retries it with
        growing back-off; with the Api capped at 128, 256 sessions got 7.3 actions/s against 81.1 with these limits
        (debug preset, 2 CPUs) and 14.1 against 112.3 on an H200 (2x): benchmarks/RESULTS.md, session 18. Memory
        stays bounded by `max_inflight_bytes`, not by these caps. A Serve config's `deployments:` entry that sets
        `max_ongoing_requests` overrides them (tests/test_deploy.py refuses a shipped one below them)."""
        return {"Api": self.max_sessions + API_HEADROOM,
                "PolicyServer": max(self.max_sessions, self.max_batch_size) + API_HEADROOM}
