"""One optimizer step of truncated BPTT: `optimizer_step` on piece [t0, t0 + trunc_t) of every micro-batch.

For each micro-batch the piece runs forward and backward with its own recurrent state (carried from the
previous piece, detached); then the summed gradient makes one AdamW step. So a step sees the gradient of
`batch_size * grad_accum * num_workers` sequences, exactly as a batch that large would (tested).
(The original zeroed gradients on every piece, so its accumulation never accumulated; see docs/training.md.)
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist

from steve1_ray.models.policy import detach_state, logprob
from steve1_ray.train.config import TrainConfig


def autocast(cfg: TrainConfig, device: torch.device):
    """The autocast context of `cfg.precision` (a no-op for fp32)."""
    if cfg.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def piece_loss(log_probs: dict, buttons: torch.Tensor, camera: torch.Tensor, reduction: str):
    """(objective, summed NLL, frames) of one piece. `sum_time` is STEVE-1's: −mean_b Σ_t log p(a_t)."""
    lp = logprob(log_probs, buttons, camera)                     # (B, t) float32
    loss = -lp.sum(1).mean() if reduction == "sum_time" else -lp.mean()
    return loss, -lp.detach().sum(), lp.numel()


def take_piece(batch: dict, t0: int, t1: int, device) -> tuple:
    """Frames [t0, t1) of a collated batch on `device`: (img, goal_embed, first, buttons, camera)."""
    return (batch["img"][:, t0:t1].to(device, non_blocking=True),          # (B, t, 128, 128, 3) uint8
            batch["goal_embed"][:, t0:t1].to(device, non_blocking=True),   # (B, t, D) float32
            batch["first"][:, t0:t1].to(device),                           # (B, t) bool
            batch["buttons"][:, t0:t1].to(device), batch["camera"][:, t0:t1].to(device))


def set_lr(optimizer, lr: float) -> None:
    """The scheduled learning rate on every group, times the group's `lr_scale` (`build_optimizer(lr_scales=)`)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def optimizer_step(model, policy, optimizer, scaler, micro_batches: list[dict], states: list, t0: int,
                   cfg: TrainConfig, device, lr: float) -> dict:
    """One AdamW step on piece [t0, t0 + trunc_t) of every micro-batch; updates `states` in place.

    The gradient is the mean over all sequences of all micro-batches (and, through DDP, all workers).
    Returns this worker's sums for logging and the (global) gradient norm before clipping.
    """
    set_lr(optimizer, lr)
    n = len(micro_batches)
    loss_sum, nll_sum, frames = 0.0, 0.0, 0
    for m, batch in enumerate(micro_batches):
        img, goal, first, buttons, camera = take_piece(batch, t0, t0 + cfg.trunc_t, device)
        sync = m == n - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            with autocast(cfg, device):
                log_probs, new_state = model(img, goal, first, states[m])
            loss, nll, count = piece_loss(log_probs, buttons, camera, cfg.loss_reduction)
            scaled = loss / n
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        states[m] = detach_state(new_state)
        loss_sum += float(loss.detach())
        nll_sum += float(nll)
        frames += count
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
    loss_ok, grad_ok = all_finite([math.isfinite(loss_sum), math.isfinite(grad_norm)], device)
    if not (loss_ok and grad_ok):
        # clip_grad_norm_ returns NaN without raising, and optimizer.step() would write it into every weight:
        # skip the update on every worker (they agree), leave the weights as they were
        optimizer.zero_grad(set_to_none=True)
        # fp16 with a finite loss: GradScaler's overflow, which it cures by lowering the scale (normal while it
        # finds its scale); it counts towards max_nonfinite_steps only once the scale cannot go lower than 1
        overflow = scaler is not None and loss_ok and scaler.get_scale() > 1.0  # every rank's loss was finite
        if scaler is not None:
            scaler.update()  # lower the loss scale, as GradScaler does on overflow
        return {"loss_sum": 0.0, "nll_sum": 0.0, "frames": 0, "grad_norm": grad_norm, "skipped": True,
                "overflow": overflow}
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss_sum": loss_sum / n, "nll_sum": nll_sum, "frames": frames, "grad_norm": grad_norm, "skipped": False}


def all_finite(oks: list[bool], device) -> list[bool]:
    """For each flag: true on every worker (one all-reduce when distributed), so every rank takes the same
    branch and counts the same."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(oks)
    flags = torch.tensor([0.0 if ok else 1.0 for ok in oks], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return [float(f) == 0.0 for f in flags]
