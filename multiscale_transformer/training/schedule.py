"""The learning-rate schedule as a pure function of the step: linear warmup, then cosine decay."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """lr rises linearly over `warmup` steps to `lr`, then follows a cosine to `lr * min_ratio` at `total`."""

    lr: float
    warmup: int
    total: int
    min_ratio: float = 0.1

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.lr, self.warmup, self.total, self.min_ratio)


def lr_at(step: int, lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Learning rate for optimizer step `step` (0-based); constant at the floor after `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= total:
        return lr * min_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def default_warmup(total: int) -> int:
    """5% of the run, at least 1 and at most 200 steps: long enough for Lion's sign updates to settle."""
    return max(1, min(200, round(0.05 * total)))
