"""Optimizer construction: Lion (the AXL models' optimizer), AdamW, SGD and Muon, with weight decay on weights only.

Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") takes the sign of an
interpolated momentum, so every coordinate moves by exactly lr: the paper advises a learning rate
3-10x smaller and a weight decay 3-10x larger than AdamW's, keeping lr * wd about the same. We use
lion-pytorch, whose decay p *= 1 - lr * wd is the paper's decoupled form (tests/test_optim.py checks
one step against the paper's definition).

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers"; the modded-nanogpt speedrun's largest
optimizer win) replaces each hidden matrix's Nesterov momentum by its nearest semi-orthogonal matrix
(five Newton-Schulz iterations), so every direction of the update moves by about the same amount.
It is only defined for matrices that map hidden states to hidden states; the byte embedding (tied with
the head), the scale-fusion gate and the norm gains are trained by AdamW inside the same optimizer
(`MuonAdamW`). torch.optim.Muon exists in torch 2.13 but casts the iteration to bfloat16, which
measured 16-30 ms per (96..256, 96..256) matrix on this CPU against 0.9-1.9 ms in float32 (17x), so
`orthogonalize` below runs it in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
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
# SGD uses momentum 0.9 (betas[0]). Muon scales each matrix's update to the RMS an AdamW update has
# (Liu et al. 2025, "Muon is Scalable for LLM Training": 0.2 * sqrt(max(rows, cols))), so one lr serves
# every group (the trainer's schedule sets them all alike), with AdamW's weight decay; its betas are
# those of the AdamW part, the Muon momentum is MUON_MOMENTUM. Its lr 1e-2 beat 3e-3 on mini and its
# flat twin (docs/quality.md, 4 CPU-minutes) and is what the 20-minute and tiny sweeps used.
DEFAULTS: dict[str, OptimizerDefaults] = {
    "lion": OptimizerDefaults(lr=1e-3, weight_decay=0.3, betas=(0.9, 0.99)),
    "adamw": OptimizerDefaults(lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95)),
    "sgd": OptimizerDefaults(lr=0.1, weight_decay=0.0, betas=(0.9, 0.0)),
    "muon": OptimizerDefaults(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95)),
}
DISPLAY_NAMES = {"lion": "Lion", "adamw": "AdamW", "sgd": "SGD", "muon": "Muon+AdamW"}
MUON_MOMENTUM = 0.95
# Keller Jordan's quintic coefficients (also torch.optim.Muon's): they maximise the slope at zero,
# so small singular values grow fast; the result has singular values in about [0.7, 1.2], not exactly 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
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
    if name == "muon":
        return MuonAdamW(muon_param_groups(model, wd), lr=lr, betas=(b1, b2))
    return torch.optim.SGD(groups, lr=lr, momentum=b1)


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The weights Muon trains: every nn.Linear weight except the scale-fusion gate, whose 3 rows
    weight the scales per byte (closer to a gain than a hidden map). The byte embedding, which the head
    shares, is an nn.Embedding and so never in this list."""
    gate = getattr(model, "fusion", None)
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear) and m is not gate and m.weight.requires_grad]


def muon_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Muon for the hidden matrices; AdamW for the rest, decayed only where >= 2-D (the embedding)."""
    hidden = {id(p) for p in hidden_matrices(model)}
    params = [p for p in model.parameters() if p.requires_grad]
    muon = [p for p in params if id(p) in hidden]
    rest = [p for p in params if id(p) not in hidden]
    return [
        {"params": muon, "weight_decay": weight_decay, "use_muon": True},
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay, "use_muon": False},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "use_muon": False},
    ]


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS, eps: float = 1e-7) -> torch.Tensor:
    """About U V^T for g = U S V^T: the quintic Newton-Schulz iteration X <- aX + (bA + cA^2)X, A = X X^T,
    in float32. Dividing by the Frobenius norm first puts every singular value in (0, 1], where the
    iteration pushes them towards 1; it runs on the wide orientation so that A is the smaller Gram matrix."""
    if g.dim() != 2:
        raise ValueError(f"orthogonalize takes a matrix, got shape {tuple(g.shape)}")
    a, b, c = NS_COEFFICIENTS
    tall = g.size(0) > g.size(1)
    x = g.float().T if tall else g.float()  # (m, n) with m <= n
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T  # (m, m)
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.T if tall else x).to(g.dtype)


def muon_lr_scale(shape: torch.Size) -> float:
    """Makes an orthogonalized update's RMS match a typical AdamW update's (~0.2), so lr means the same."""
    return 0.2 * math.sqrt(max(shape[0], shape[1]))


class MuonAdamW(torch.optim.Optimizer):
    """Muon on groups with use_muon=True, AdamW on the others: one optimizer, so the trainer's lr
    schedule, gradient clipping and checkpoint state_dict/load_state_dict work as for any other.

    Both parts decay weights the decoupled way, p *= 1 - lr * wd, before the update. Muon: momentum
    buffer m = mu*m + (1-mu)*g, Nesterov look-ahead u = mu*m + (1-mu)*g, p -= lr * scale * orth(u)
    (torch.optim.Muon's update with adjust_lr_fn="match_rms_adamw", in float32)."""

    def __init__(
        self,
        params: Iterable[dict],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        momentum: float = MUON_MOMENTUM,
        ns_steps: int = NS_STEPS,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "momentum": momentum, "ns_steps": ns_steps}
        super().__init__(params, {**defaults, "weight_decay": 0.0, "use_muon": False})
        for group in self.param_groups:
            if group["use_muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon groups take 2-D parameters only")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.mul_(1 - group["lr"] * group["weight_decay"])
                if group["use_muon"]:
                    self._muon_update(p, group)
                else:
                    self._adamw_update(p, group)
        return loss

    def _muon_update(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buf, mu = state["momentum_buffer"], group["momentum"]
        buf.lerp_(p.grad, 1 - mu)
        update = p.grad.lerp(buf, mu)  # Nesterov: mu * m + (1 - mu) * g
        p.add_(orthogonalize(update, group["ns_steps"]), alpha=-group["lr"] * muon_lr_scale(p.shape))

    def _adamw_update(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        b1, b2 = group["betas"]
        state["step"] += 1
        t = float(state["step"])
        state["exp_avg"].lerp_(p.grad, 1 - b1)
        state["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
        denom = (state["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - b1**t))
