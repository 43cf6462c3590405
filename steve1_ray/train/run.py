"""`steve1 train` / `jobs/train.py`: STEVE-1 behaviour cloning on Ray Train (TorchTrainer, DDP).

    python jobs/train.py --config debug data=/data/world_shards
    ray job submit --working-dir . -- python jobs/train.py --config finetune data=s3://bucket/shards \\
        in_weights=weights/steve1.weights num_workers=4 use_gpu=true storage_path=s3://bucket/runs

Rerunning with the same `run_name` and `storage_path` resumes from the run's latest checkpoint
(use a new `run_name`, or `fresh=true`, to start over).

While `fit()` runs, this process prints `[train] step ...` lines with an ETA (`DriverProgress`): the workers'
own lines stay in Ray's worker logs, which a driver started with `log_to_driver=False` (the quick start) never
shows.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import threading
import time

from steve1_ray.cluster import check_workers_fit, connect
from steve1_ray.config import save_config, to_dict
from steve1_ray.hostmem import runtime_env
from steve1_ray.progress import Meter, duration, rate
from steve1_ray.runner import Job, run_job
from steve1_ray.train.config import TrainConfig, is_uri


def build_trainer(cfg: TrainConfig, callbacks: list | None = None, run_config_kwargs: dict | None = None,
                  progress_sink=None):
    """A `TorchTrainer` running `train_loop_per_worker` with the scaling, storage and failure policy of `cfg`.

    `callbacks` (e.g. Tune's `TuneReportCallback`) go into the RunConfig; the Tune sweep builds on this.
    `progress_sink`: a `DriverProgress` box that rank 0 sends its progress numbers to.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from steve1_ray.train.loop import PROGRESS_SINK_KEY, train_loop_per_worker

    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    scaling = ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                      resources_per_worker=resources if cfg.num_workers else None,
                                      placement_strategy=cfg.placement_strategy)
    checkpointing = ray.train.CheckpointConfig(num_to_keep=cfg.num_to_keep, checkpoint_score_attribute="val/loss",
                                               checkpoint_score_order="min")
    run_config = ray.train.RunConfig(
        name=cfg.run_name, storage_path=_storage(cfg.storage_path), checkpoint_config=checkpointing,
        failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        callbacks=callbacks or None,
        # glibc reads its tunables at process start: they go into the workers' environment (steve1_ray/hostmem.py)
        **({"worker_runtime_env": runtime_env()} if cfg.reuse_freed_memory else {}),
        **(run_config_kwargs or {}))
    loop_config = to_dict(cfg) | ({PROGRESS_SINK_KEY: progress_sink} if progress_sink is not None else {})
    return TorchTrainer(train_loop_per_worker, train_loop_config=loop_config, scaling_config=scaling,
                        run_config=run_config, torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"))


def run_training(cfg: TrainConfig, callbacks: list | None = None, from_process_start: bool = False):
    """Fit and return the Ray `Result` (its `.checkpoint` is the latest; `.metrics` the last report), printing
    progress lines here while it runs; `from_process_start`: the first step's latency counts from this process's
    start (`steve1 train`), not from here."""
    cfg = cfg.with_absolute_paths()  # the workers start in another folder
    _check_resources(cfg)
    with DriverProgress(cfg, from_process_start=from_process_start) as progress:
        return build_trainer(cfg, callbacks, progress_sink=progress.box).fit()


def _started_for_training() -> bool:
    """Whether this process was started to train (`steve1 train`, `jobs/train.py`, `python -m
    steve1_ray.train.run`), not a quick start or release running training as one of its stages."""
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return (name == "steve1" and sys.argv[1:2] == ["train"]) or name == "train.py" or (
        name == "run.py" and os.path.basename(os.path.dirname(sys.argv[0])) == "train")


def seconds_since_process_start() -> float | None:
    """Seconds since this process started (Linux: /proc), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, after the command's name
        with open("/proc/uptime") as f:
            uptime_s = float(f.read().split()[0])
        since = uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")
        return since if since >= 0 else None  # a virtualised /proc/uptime (lxcfs) can say so
    except (OSError, ValueError, IndexError):
        return None


def first_step_line(latency_s: float, n: dict, before_s: float | None = None) -> str:
    """Where the time to the first optimizer step went: `latency_s` from the trainer's start (the driver), `n`
    the first step's report (its `first_step_s`, and from a worker that sends them `worker_s` since the loop's
    entry and `setup_s` per phase), `before_s` from the process start to the trainer (imports, the cluster)."""
    secs = "{:.1f}s".format
    step_s = n["first_step_s"]
    head = (f"first step done {secs(latency_s + before_s)} after `steve1 train` started: " if before_s is not None
            else f"first step done {secs(latency_s)} after the start: ")
    if "worker_s" not in n:  # a worker without the setup clock
        return head + f"{secs(latency_s - step_s)} setting up (workers, data, model), {secs(step_s)} the step itself"
    parts = [] if before_s is None else [f"driver {secs(before_s)} (imports, Ray cluster)"]
    gap = secs(max(0.0, latency_s - n["worker_s"]))
    parts.append(f"Ray {gap} (worker group: processes, imports, torch.distributed)" if n.get("workers", 1)
                 else f"local mode {gap} (Ray Train's set-up in this process)")
    parts += [f"{name} {secs(x)}" for name, x in n["setup_s"].items()]
    parts.append(f"the step {secs(step_s)}")
    return head + ", ".join(parts)


class _ProgressBox:
    """A Ray actor: keeps what rank 0 `put`s until the driver `take`s it."""

    def __init__(self):
        self.items: list[dict] = []

    def put(self, numbers: dict) -> None:
        self.items.append(numbers)

    def take(self) -> list[dict]:
        items, self.items = self.items, []
        return items


class DriverProgress:
    """Progress lines of a run, printed by this (the driver's) process: rank 0 sends its numbers to `box`, an
    actor (train/report.py `RunLog.progress`); a thread here takes them every `poll_s` seconds and prints them
    with a `Meter` (every tenth of the steps and at least every `every_s` seconds, plus the first step's
    latency). An actor, not a file, so it works for any storage_path (s3:// too) and on many nodes."""

    def __init__(self, cfg: TrainConfig, every_s: float = 60.0, poll_s: float = 1.0, write=None,
                 from_process_start: bool = False):
        import ray

        self.cfg, self.poll_s, self.first_step_shown = cfg, poll_s, False
        # imports, config, the Ray cluster: the time before the trainer (`steve1 train` only)
        self.before_s = seconds_since_process_start() if from_process_start else None
        self.box = ray.remote(num_cpus=0)(_ProgressBox).remote()
        self.meter = Meter("train", "step", math.ceil(cfg.n_frames / cfg.frames_per_step), every_s, write)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="train-progress", daemon=True)

    def __enter__(self) -> "DriverProgress":
        cfg = self.cfg
        where = f"{cfg.num_workers} Ray Train worker(s)" if cfg.num_workers else "this process (local mode)"
        self.meter.say(f"{self.meter.total} optimizer steps of {cfg.frames_per_step:,} frames on {where}; starting")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import ray

        self._stop.set()
        self._thread.join()
        ray.kill(self.box)

    def _run(self) -> None:
        import ray

        while True:
            stopping = self._stop.wait(self.poll_s)
            try:
                items = ray.get(self.box.take.remote(), timeout=60)
            except Exception as e:  # noqa: BLE001 - progress lines are not worth failing a run over
                print(f"warning: no more progress lines: {e}", file=sys.stderr, flush=True)
                return
            for numbers in items:
                self.show(numbers)
            if stopping:
                return

    def show(self, n: dict) -> None:
        """One message of rank 0: the first step's time, or the numbers of a log point."""
        if "first_step_s" in n:
            if self.first_step_shown:  # a worker group restarted after a failure: its first step says nothing new
                return
            self.first_step_shown = True
            self.meter.say(first_step_line(self.meter.elapsed_s(), n, self.before_s))
            return
        val = f"  val {n['val_loss']:.4g}" if math.isfinite(n["val_loss"]) else ""
        self.meter.update(n["steps"], f"frames {n['frames']:,}/{self.cfg.n_frames:,}",
                          f"loss {n['loss']:.4g}{val}", rate(n["frames_per_s"], "frames"), eta_s=n["eta_s"])


def _storage(path: str) -> str:
    return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def _check_resources(cfg: TrainConfig) -> None:
    """Fail fast, naming the fix, when the cluster can never place the workers (Ray would wait forever)."""
    check_workers_fit(cfg.num_workers, cfg.cpus_per_worker, cfg.use_gpu, cfg.gpus_per_worker)


def train(cfg: TrainConfig) -> int:
    """`steve1 train`: fit, print where the checkpoint and weights went; exit 1 if the run failed."""
    from steve1_ray.train.checkpoint import NonFiniteError

    if cfg.fresh and not is_uri(cfg.storage_path) and os.path.isdir(cfg.run_dir()):
        shutil.rmtree(cfg.run_dir())
    cfg = dataclasses.replace(cfg, fresh=False).with_absolute_paths()  # done: every saved copy resumes
    if not is_uri(cfg.storage_path):
        save_config(cfg, os.path.join(cfg.run_dir(), "train_config.yaml"))
    connect()
    try:
        result = run_training(cfg, from_process_start=_started_for_training())
        error = result.error
    except NonFiniteError as exc:  # local mode (num_workers=0) raises in this process
        error = exc
    if error:
        print(f"steve1 train: the run failed: {error}", file=sys.stderr)
        return 1
    metrics = result.metrics or {}
    print(f"finished: {metrics.get('frames', '?')} frames, val/loss {metrics.get('val/loss', float('nan')):.4f}; "
          f"checkpoint {result.checkpoint.path if result.checkpoint else None}; "
          f"weights {cfg.resolved_out_weights()}", flush=True)
    return 0


JOB = Job("train", TrainConfig, train, presets="train",
          summary="STEVE-1 behaviour cloning with hindsight relabeling on Ray Train.",
          examples="""
          steve1 train --config debug data=/data/world_shards
          steve1 train --config finetune data=s3://bucket/shards in_weights=steve1.weights num_workers=4 use_gpu=true""")


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, argv)


if __name__ == "__main__":
    # `python -m steve1_ray.train.run`: run the imported module, whose classes Ray ships by reference (this
    # __main__ copy's dataclasses fail to unpickle in the workers: NameError ClassVar)
    from steve1_ray.train.run import main as _main

    sys.exit(_main())
