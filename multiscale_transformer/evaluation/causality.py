"""Empirical future-leak checks: perturb later bytes and compare logits; gradients into the future.

A causal model passes with exactly zero difference; anything else is a leak.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Leak:
    """The largest change seen in logits at positions <= `position` when later bytes changed."""

    magnitude: float = 0.0
    position: int = -1
    length: int = 0
    kind: str = "none"

    def worse(self, other: Leak) -> Leak:
        return other if other.magnitude > self.magnitude else self


def perturbation_leak(
    forward: Forward,
    vocab_size: int,
    lengths: Iterable[int],
    cuts_per_length: int = 8,
    batch: int = 3,
    seed: int = 0,
) -> Leak:
    """Change every byte after t (random t) and measure how much logits at 0..t moved."""
    gen = torch.Generator().manual_seed(seed)
    worst = Leak()
    for T in lengths:
        x = torch.randint(0, 256, (batch, T), generator=gen)
        base = forward(x)
        cuts = {T - 2, 0} | set(torch.randint(0, T, (cuts_per_length,), generator=gen).tolist())
        for t in sorted(c for c in cuts if 0 <= c < T - 1):
            y = x.clone()
            y[:, t + 1 :] = torch.randint(0, min(vocab_size, 256), (batch, T - t - 1), generator=gen)
            diff = (forward(y)[:, : t + 1] - base[:, : t + 1]).abs()
            worst = worst.worse(Leak(float(diff.max()), t, T, "logits"))
    return worst


def gradient_leak(model: nn.Module, embedding: nn.Embedding, T: int, positions: Iterable[int], seed: int = 0) -> Leak:
    """|d logits[t] / d embedding[s]| for s > t, read from the embedding output's gradient."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (2, T), generator=gen)
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        output.retain_grad()
        captured.append(output)
        return output

    worst = Leak()
    handle = embedding.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            for t in positions:
                if not 0 <= t < T - 1:
                    continue
                captured.clear()
                logits = model(x)
                logits[:, t].float().pow(2).sum().backward()
                grad = captured[0].grad
                assert grad is not None
                worst = worst.worse(Leak(float(grad[:, t + 1 :].abs().max()), t, T, "gradient"))
                model.zero_grad(set_to_none=True)
    finally:
        handle.remove()
    return worst
