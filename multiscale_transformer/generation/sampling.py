"""Sampling as pure functions on logits (B, V) -> logits or ids; no model, no state."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from multiscale_transformer.errors import UserError


@dataclass(frozen=True)
class SamplingParams:
    """The published AXL defaults; temperature 0 means greedy."""

    temperature: float = 0.8
    top_k: int | None = 40
    top_p: float | None = 0.9
    repetition_penalty: float = 1.1

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise UserError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise UserError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty (as Hugging Face): seen ids' positive logits / penalty, negative ones * penalty.

    history: (B, T) ids seen so far (prompt and output); entries < 0 are ignored (padding).
    """
    if penalty == 1.0 or history.numel() == 0:
        return logits
    seen = torch.zeros_like(logits, dtype=torch.bool)
    valid = history >= 0
    seen.scatter_(1, history.clamp(min=0), valid)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the k largest logits per row (ties at the threshold kept); k None or 0 keeps all."""
    if not k or k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of top ids whose probability reaches p (at least one)."""
    if p is None or p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    # Drop an id when the mass strictly before it already reaches p.
    drop_sorted = probs.cumsum(-1) - probs >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    history: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next ids (B,) from last-position logits (B, V)."""
    logits = apply_repetition_penalty(logits.float(), history, params.repetition_penalty)
    if params.greedy:
        return logits.argmax(dim=-1)
    logits = top_p_filter(top_k_filter(logits / params.temperature, params.top_k), params.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
