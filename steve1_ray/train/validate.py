"""Validation: `validate` (mean objective and NLL on the fixed val set, summed over workers) and `Validation`,
which runs it at the loop's validation points and keeps the books (best loss, patience, best weights)."""
from __future__ import annotations

import time

import torch
import torch.distributed as dist

from steve1_ray.models.policy import logprob
from steve1_ray.train.checkpoint import Progress, export_best
from steve1_ray.train.config import TrainConfig
from steve1_ray.train.data import Prefetcher, SequenceDataset, val_batches
from steve1_ray.train.step import autocast, take_piece


@torch.no_grad()
def validate(policy, val_set: SequenceDataset, cfg: TrainConfig, rank: int, world: int, device) -> dict:
    """Mean objective and per-frame NLL over the fixed-relabeling val set, the same for any worker count."""
    was_training = policy.training
    policy.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # objective sum, pieces x rows, nll sum, frames
    loader = Prefetcher(val_set, cfg.loader_threads, cfg.prefetch_batches)
    try:
        for batch in loader.iter_batches(val_batches(len(val_set), rank, world, cfg.batch_size,
                                                     cfg.val_max_sequences), epoch=0):
            b = batch["img"].shape[0]
            state = policy.initial_state(b, device=device)
            for t0 in range(0, cfg.T, cfg.trunc_t):
                img, goal, first, buttons, camera = take_piece(batch, t0, t0 + cfg.trunc_t, device)
                with autocast(cfg, device):
                    log_probs, state = policy(img, goal, first, state)
                nll = -logprob(log_probs, buttons, camera).double()     # (B, t)
                per_row = nll.sum(1) if cfg.loss_reduction == "sum_time" else nll.mean(1)
                sums += torch.stack([per_row.sum().cpu(), torch.tensor(float(b), dtype=torch.float64),
                                     nll.sum().cpu(), torch.tensor(float(nll.numel()), dtype=torch.float64)])
    finally:
        loader.close()
    sums = all_reduce_sum(sums)
    policy.train(was_training)
    if sums[1] == 0:
        return {"val/loss": float("inf"), "val/nll": float("inf"), "val/sequences": 0}
    return {"val/loss": float(sums[0] / sums[1]), "val/nll": float(sums[2] / sums[3]),
            "val/sequences": int(sums[3]) // cfg.T}


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """`x` summed over all workers (`x` itself without a process group of more than one)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


class Validation:
    """`validation(progress) -> dict`: validate, update `progress` (last and best val loss, validations since
    the best), export `<out>_best.weights` + `.json` on rank 0 when the loss improved, and log it.

    Returns the `val/*` metrics plus `val/improved` (1.0 or 0.0), or {} when there is no val set."""

    def __init__(self, policy, val_set: SequenceDataset, cfg: TrainConfig, rank: int, world: int, device, log):
        self.policy, self.val_set, self.cfg, self.log = policy, val_set, cfg, log
        self.rank, self.world, self.device = rank, world, device
        self.out_weights = cfg.resolved_out_weights()

    def __call__(self, progress: Progress) -> dict:
        if len(self.val_set) == 0:
            return {}
        t = time.time()
        val = validate(self.policy, self.val_set, self.cfg, self.rank, self.world, self.device)
        progress.last_val_loss = val["val/loss"]
        improved = val["val/loss"] < progress.best_val_loss
        if improved:
            progress.best_val_loss, progress.vals_since_best = val["val/loss"], 0
            if self.rank == 0:
                export_best(self.policy, self.out_weights, progress)
        else:
            progress.vals_since_best += 1
        self.log.validation(val, progress, improved, t)
        return {**val, "val/improved": float(improved)}
