"""Optimizer construction: Lion (the AXL models' optimizer), AdamW and SGD, with weight decay on weights only.

Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") takes the sign of an
interpolated momentum, so every coordinate moves by exactly lr: the paper advises a learning rate
3-10x smaller and a weight decay 3-10x larger than AdamW's, keeping lr * wd about the same. We use
lion-pytorch, whose decay p *= 1 - lr * wd is the paper's decoupled form (tests/test_optim.py checks
one step against the paper's definition).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from multiscale_transformer.errors import UserError


@dataclass(frozen=True)
class OptimizerDefaults:
    lr: float
    weight_decay: float
    betas: tuple[float, float]


# Learning rates for models up to d_model 256, scaled down as 256/d_model for wider ones (wider
# matrices take larger steps per unit lr). AdamW's are the usual small-transformer values; Lion's follow
# the paper's advice relative to them (lr 3x smaller, weight decay 3x larger, betas 0.9/0.99); on tiny,
# Lion at 3e-4 reached 5.10 val bits/byte after 150 steps, 1e-3 3.78, 3e-3 3.79 (docs/training.md).
# SGD uses momentum 0.9 (betas[0]).
DEFAULTS: dict[str, OptimizerDefaults] = {
    "lion": OptimizerDefaults(lr=1e-3, weight_decay=0.3, betas=(0.9, 0.99)),
    "adamw": OptimizerDefaults(lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95)),
    "sgd": OptimizerDefaults(lr=0.1, weight_decay=0.0, betas=(0.9, 0.0)),
}
REFERENCE_WIDTH = 256


def default_lr(name: str, d_model: int) -> float:
    return DEFAULTS[name].lr * min(1.0, REFERENCE_WIDTH / d_model)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices and embeddings (>= 2-D); never norms' gains or biases (1-D)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    model: nn.Module,
    name: str = "lion",
    lr: float | None = None,
    weight_decay: float | None = None,
    betas: tuple[float, float] | None = None,
) -> torch.optim.Optimizer:
    """The named optimizer with its defaults, any of lr / weight_decay / betas overridden."""
    if name not in DEFAULTS:
        raise UserError(f"unknown optimizer {name!r}; choose one of: {', '.join(DEFAULTS)}")
    d = DEFAULTS[name]
    width = getattr(getattr(model, "config", None), "d_model", REFERENCE_WIDTH)
    lr = default_lr(name, width) if lr is None else lr
    wd = d.weight_decay if weight_decay is None else weight_decay
    b1, b2 = d.betas if betas is None else betas
    if not lr > 0:
        raise UserError(f"learning rate must be positive, got {lr}")
    groups = param_groups(model, wd)
    if name == "lion":
        from lion_pytorch import Lion

        return Lion(groups, lr=lr, betas=(b1, b2))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), fused=False)
    return torch.optim.SGD(groups, lr=lr, momentum=b1)
