"""Progress lines with an ETA, one shape for every job:

    [train] step 40/128 (31%)  frames 40,960/131,072  loss 13.2  2.1k frames/s  elapsed 3m02s  ETA 6m40s

`Meter(job, unit, total)` prints such a line when the work crosses a tenth of its total, when `every_s` seconds
passed since the last line, and at the end. Plain lines, never a bar redrawn with '\\r', so a log file or a pipe
reads the same as a terminal. `duration` and `number` format the parts; callers add their own fields
("loss 13.2", `rate(2100, "frames")`). No Ray here: jobs whose work runs in Ray workers bring the numbers to the
driver (train/run.py) and print them with a Meter there.
"""
from __future__ import annotations

import math
import time
from typing import Callable


def duration(seconds: float | None) -> str:
    """45s, 3m02s, 1h05m; '?' when unknown (None, nan, inf or negative)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def number(x: float) -> str:
    """A short number: 0.52, 7.3, 42, 2.1k, 1.5M."""
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 1e6:
        return f"{x / 1e6:.1f}M"
    if abs(x) >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.2g}"


def rate(per_s: float, unit: str) -> str:
    """'2.1k frames/s'."""
    return f"{number(per_s)} {unit}/s"


def seconds_left(done: float, total: float, elapsed_s: float, done_at_start: float = 0.0) -> float:
    """Seconds left at the rate so far (`done - done_at_start` in `elapsed_s`); nan before any work is done."""
    if done >= total:
        return 0.0
    if done <= done_at_start or elapsed_s <= 0:
        return math.nan
    return (total - done) * elapsed_s / (done - done_at_start)


class Meter:
    """Progress of one job towards `total` units: `update(done, *fields)` prints a line when it is due.

    `write` takes each line (default: print to stdout and flush). The ETA is the rate since the Meter started
    unless the caller knows better (`update(..., eta_s=...)`: e.g. the trainer's, from when its setup ended)."""

    def __init__(self, job: str, unit: str, total: float, every_s: float = 60.0,
                 write: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.job, self.unit, self.total, self.every_s = job, unit, total, every_s
        self.write = write or (lambda text: print(text, flush=True))
        self.clock = clock
        self.t0 = self.t_last = clock()
        self.tenths = 0  # tenths of the total already announced

    def elapsed_s(self) -> float:
        return self.clock() - self.t0

    def line(self, done: float, *fields: str, eta_s: float | None = None) -> str:
        elapsed = self.elapsed_s()
        if eta_s is None:
            eta_s = seconds_left(done, self.total, elapsed)
        pct = f" ({100 * done / self.total:.0f}%)" if self.total > 0 else ""
        parts = [f"{self.unit} {done:,}/{self.total:,}{pct}", *fields, f"elapsed {duration(elapsed)}",
                 f"ETA {duration(eta_s)}"]
        return f"[{self.job}] " + "  ".join(parts)

    def update(self, done: float, *fields: str, eta_s: float | None = None, force: bool = False) -> str | None:
        """Print (and return) the line if it is due, or if `force`; else return None."""
        tenths = int(10 * done / self.total) if self.total > 0 else 10
        now = self.clock()
        if not (force or tenths > self.tenths or now - self.t_last >= self.every_s):
            return None
        self.tenths, self.t_last = max(tenths, self.tenths), now
        text = self.line(done, *fields, eta_s=eta_s)
        self.write(text)
        return text

    def say(self, text: str) -> None:
        """A line of this job outside the count (`[job] text`)."""
        self.write(f"[{self.job}] {text}")
