"""Learning rate as a function of frames trained: linear warmup, then cosine decay (STEVE-1's `get_lr`).

    lr_at(frames) = lr * frames / warmup_frames                        while frames < warmup_frames
                  = lr * ½(1 + cos(π (frames − warmup) / (decay_end − warmup)))   until decay_end
                  = 0                                                  after decay_end = factor * n_frames
"""
from __future__ import annotations

import math


def lr_at(frames: int, lr: float, warmup_frames: int, n_frames: int, decay_frames_factor: float = 1.1) -> float:
    if frames < warmup_frames:
        return lr * frames / warmup_frames
    decay_end = decay_frames_factor * n_frames
    if frames >= decay_end or decay_end <= warmup_frames:
        return 0.0 if frames >= decay_end else lr
    ratio = (frames - warmup_frames) / (decay_end - warmup_frames)
    return lr * 0.5 * (1.0 + math.cos(math.pi * ratio))
