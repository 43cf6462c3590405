"""`steve1 train` / `jobs/train.py`: STEVE-1 behaviour cloning on Ray Train (TorchTrainer, DDP).

    python jobs/train.py --config debug data=/data/world_shards
    ray job submit --working-dir . -- python jobs/train.py --config finetune data=s3://bucket/shards \\
        in_weights=weights/steve1.weights num_workers=4 use_gpu=true storage_path=s3://bucket/runs

Rerunning with the same `run_name` and `storage_path` resumes from the run's latest checkpoint
(use a new `run_name`, or `fresh=true`, to start over).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys

from steve1_ray.cluster import connect
from steve1_ray.config import ConfigError, save_config, to_dict
from steve1_ray.runner import Job, run_job
from steve1_ray.train.config import TrainConfig, is_uri


def build_trainer(cfg: TrainConfig, callbacks: list | None = None, run_config_kwargs: dict | None = None):
    """A `TorchTrainer` running `train_loop_per_worker` with the scaling, storage and failure policy of `cfg`.

    `callbacks` (e.g. Tune's `TuneReportCallback`) go into the RunConfig; the Tune sweep builds on this.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from steve1_ray.train.loop import train_loop_per_worker

    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    scaling = ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                      resources_per_worker=resources if cfg.num_workers else None)
    checkpointing = ray.train.CheckpointConfig(num_to_keep=cfg.num_to_keep, checkpoint_score_attribute="val/loss",
                                               checkpoint_score_order="min")
    run_config = ray.train.RunConfig(
        name=cfg.run_name, storage_path=_storage(cfg.storage_path), checkpoint_config=checkpointing,
        failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        callbacks=callbacks or None, **(run_config_kwargs or {}))
    return TorchTrainer(train_loop_per_worker, train_loop_config=to_dict(cfg), scaling_config=scaling,
                        run_config=run_config, torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"))


def run_training(cfg: TrainConfig, callbacks: list | None = None):
    """Fit and return the Ray `Result` (its `.checkpoint` is the latest; `.metrics` the last report)."""
    _check_resources(cfg)
    return build_trainer(cfg, callbacks).fit()


def _storage(path: str) -> str:
    return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def _check_resources(cfg: TrainConfig) -> None:
    """Fail fast, naming the fix, when the cluster can never place the workers (Ray would wait forever)."""
    import ray

    if cfg.num_workers == 0:
        return
    total = ray.cluster_resources()
    need_cpu = cfg.num_workers * cfg.cpus_per_worker
    if total.get("CPU", 0) < need_cpu:
        raise ConfigError(f"num_workers={cfg.num_workers} x cpus_per_worker={cfg.cpus_per_worker} needs {need_cpu} "
                          f"CPUs but the cluster has {total.get('CPU', 0)}: lower num_workers or cpus_per_worker")
    if cfg.use_gpu and total.get("GPU", 0) < cfg.num_workers * cfg.gpus_per_worker:
        raise ConfigError(f"use_gpu=true with num_workers={cfg.num_workers} needs "
                          f"{cfg.num_workers * cfg.gpus_per_worker} GPUs but the cluster has {total.get('GPU', 0)}: "
                          f"set use_gpu=false (and precision=fp32 or bf16) or lower num_workers")


def train(cfg: TrainConfig) -> int:
    """`steve1 train`: fit, print where the checkpoint and weights went; exit 1 if the run failed."""
    if cfg.fresh and not is_uri(cfg.storage_path) and os.path.isdir(cfg.run_dir()):
        shutil.rmtree(cfg.run_dir())
    cfg = dataclasses.replace(cfg, fresh=False)  # done: every saved copy (run folder, checkpoints) resumes
    if not is_uri(cfg.storage_path):
        save_config(cfg, os.path.join(cfg.run_dir(), "train_config.yaml"))
    connect()
    result = run_training(cfg)
    if result.error:
        print(f"steve1 train: the run failed: {result.error}", file=sys.stderr)
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
    sys.exit(main())
