"""The learning-rate schedule as a pure function of the step: linear warmup, then a decay of one `kind`.

`cosine` (the default): a cosine from the peak to `min_ratio` of it over the steps after warmup.
`wsd` (warmup-stable-decay): the peak held flat, then a linear ramp to `min_ratio` over the last
`decay_fraction` of the run. The modded-nanogpt speedrun records found such a trapezoid better than a
cosine at equal steps (cool-down ~45-55% of the run); the flat phase also means a run's state before
the decay is a valid start for decays to several budgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULE_KINDS = ("cosine", "wsd")
DEFAULT_DECAY_FRACTION = 0.5


@dataclass(frozen=True)
class Schedule:
    """lr rises linearly over `warmup` steps to `lr`, then decays (`kind`) to `lr * min_ratio` at `total`.

    Checkpoints store this as a dict; the fields added after the first release have defaults so that
    older checkpoints (without `kind`) still resume as the cosine they were trained with."""

    lr: float
    warmup: int
    total: int
    min_ratio: float = 0.1
    kind: str = "cosine"
    decay_fraction: float = DEFAULT_DECAY_FRACTION

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; choose one of: {', '.join(SCHEDULE_KINDS)}")
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")

    def lr_at(self, step: int) -> float:
        if self.kind == "wsd":
            return wsd_lr_at(step, self.lr, self.warmup, self.total, self.min_ratio, self.decay_fraction)
        return lr_at(step, self.lr, self.warmup, self.total, self.min_ratio)


def lr_at(step: int, lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Cosine learning rate for optimizer step `step` (0-based); constant at the floor after `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= total:
        return lr * min_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def wsd_lr_at(
    step: int,
    lr: float,
    warmup: int,
    total: int,
    min_ratio: float = 0.1,
    decay_fraction: float = DEFAULT_DECAY_FRACTION,
) -> float:
    """Warmup-stable-decay: flat at `lr` until the last `decay_fraction` of `total` steps, then linear
    down to `lr * min_ratio` at `total` (and constant there after). The decay never starts inside the
    warmup, so a short run still reaches the peak before cooling down."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= total:
        return lr * min_ratio
    decay_start = max(warmup, total - round(decay_fraction * total))
    if step < decay_start:
        return lr
    progress = (step - decay_start) / max(1, total - decay_start)
    return lr * (1 - (1 - min_ratio) * progress)


def default_warmup(total: int) -> int:
    """5% of the run, at least 1 and at most 200 steps: long enough for Lion's sign updates to settle."""
    return max(1, min(200, round(0.05 * total)))
