"""Sampling as pure functions on logits (B, V) -> logits or ids; no model, no state.

Every accepted parameter gives a well-defined distribution (tests/test_properties.py): NaN logits
become -inf and +inf the largest float after the penalty, temperature divides logits that were
first shifted to a maximum of 0 (so a tiny temperature cannot overflow float32), temperatures too
small to divide by are greedy, and the nucleus always keeps the most likely id.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from multiscale_transformer.errors import UserError
from multiscale_transformer.model.config import GENERATION_DEFAULTS
from multiscale_transformer.model.vocab import EOS_ID

# Below this temperature sampling is greedy. Smaller values are not representable as a divisor in
# float32 (1e-300 is 0 there), and at 1e-5 a logit gap of 0.001 already gives odds of e^100 : 1.
GREEDY_BELOW_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """The published AXL defaults; temperature 0 (or below GREEDY_BELOW_TEMPERATURE) means greedy."""

    temperature: float = GENERATION_DEFAULTS["temperature"]
    top_k: int | None = GENERATION_DEFAULTS["top_k"]
    top_p: float | None = GENERATION_DEFAULTS["top_p"]
    repetition_penalty: float = GENERATION_DEFAULTS["repetition_penalty"]
    infill: bool = False  # llama.cpp's "infill" sampler after top-k and top-p (`infill_filter`)

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < float("inf"):
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise UserError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 < self.repetition_penalty < float("inf"):
            raise UserError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW_TEMPERATURE


def adjust_logits(
    logits: torch.Tensor,
    counts: torch.Tensor,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """OpenAI's logit_bias and frequency/presence penalties: logits (V,) or (B, V), counts of each id so far."""
    if bias is not None:
        logits = logits + bias
    if frequency_penalty or presence_penalty:
        logits = logits - (counts * frequency_penalty + (counts > 0).to(logits.dtype) * presence_penalty)
    return logits


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
    # Drop an id when the mass strictly before it already reaches p; the most likely id always stays
    # (a p that rounds to 0 in float32 would otherwise drop every id).
    drop_sorted = probs.cumsum(-1) - probs >= p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


# llama.cpp's infill sampler: EOS wins outright when it holds more than 1/(3n) of the text's mass
# among n candidates; otherwise the text ids below this probability are dropped.
INFILL_EOS_WEIGHT = 3.0
INFILL_KEEP = 0.2


def infill_filter(logits: torch.Tensor) -> torch.Tensor:
    """llama.cpp's `infill` sampler (what llama.vscode and llama.vim ask for with `"samplers": ["top_k",
    "top_p", "infill"]`) on logits (B, V) whose excluded ids are -inf: an infilling ends where the model
    gives its end a real chance or is sure of no byte.

    Per row, over the n ids still allowed: EOS alone when 3 * n * P(EOS) > P(text); else the text
    ids with P >= 0.2 are kept (with EOS, when allowed), and EOS alone when none is; then, among the
    kept ones renormalised, the text ids below 1 / (kept text ids + 1) are dropped too. llama.cpp's
    other step, merging tokens that are prefixes of each other, has nothing to merge among bytes."""
    allowed = logits > float("-inf")
    probs = torch.softmax(logits, dim=-1)
    is_eos = torch.zeros_like(allowed)
    is_eos[:, EOS_ID] = True
    p_eos = probs[:, EOS_ID : EOS_ID + 1]
    n = allowed.sum(-1, keepdim=True)
    text = allowed & ~is_eos
    kept = text & (probs >= INFILL_KEEP)
    renormed = probs / (probs * (kept | (allowed & is_eos))).sum(-1, keepdim=True)
    kept &= renormed >= 1.0 / (kept.sum(-1, keepdim=True) + 1)
    only_eos = (INFILL_EOS_WEIGHT * n * p_eos > 1.0 - p_eos) | ~kept.any(-1, keepdim=True)
    keep = torch.where(only_eos, is_eos, kept | (allowed & is_eos))
    return logits.masked_fill(~keep, float("-inf")).masked_fill(only_eos & is_eos, 0.0)


def sample_next(
    logits: torch.Tensor,
    history: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next ids (B,) from last-position logits (B, V)."""
    # After the penalty, so that whatever it overflowed to is made finite too.
    logits = apply_repetition_penalty(logits.float(), history, params.repetition_penalty)
    logits = torch.nan_to_num(logits, nan=float("-inf"), posinf=torch.finfo(logits.dtype).max)
    top = logits.amax(dim=-1, keepdim=True)  # (B, 1)
    if bool((top == float("-inf")).any()):
        raise ValueError("no byte has a finite logit (the model produced NaN, or every byte was excluded)")
    if params.greedy and not params.infill:
        return logits.argmax(dim=-1)
    # Shifted to a maximum of 0 first, so that dividing by a small temperature cannot overflow. Greedy
    # infilling filters the model's own distribution (temperature 1), then takes the most likely id.
    logits = (logits - top) / (1.0 if params.greedy else params.temperature)
    logits = top_p_filter(top_k_filter(logits, params.top_k), params.top_p)
    if params.infill:
        logits = infill_filter(logits)
    if params.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
