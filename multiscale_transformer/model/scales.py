"""The multi-scale bookkeeping in one place: causal pooling, span ends, cross-scale masks, upsampling.

Causality rule (Hourglass-style shift): before pooling a scale of factor k the byte stream is
shifted right by k-1 (zeros in front), so coarse token j covers bytes j*k-k+1 .. j*k and *ends*
at byte j*k. Byte t then reads token t // k, which ends at or before t. Every cross-scale
attention mask compares span ends: a query may read a key only if the key's span ends at or
before the query's. Token 0 of every scale ends at byte 0, so no query row is ever empty.
Nothing is padded at the end, so lengths that are not multiples of k carry no padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def n_tokens(n_bytes: int, k: int) -> int:
    """Tokens at scale k for a sequence of n_bytes bytes: one per byte position divisible by k."""
    return (n_bytes - 1) // k + 1 if n_bytes > 0 else 0


def span_ends(n: int, k: int, device: torch.device | None = None) -> torch.Tensor:
    """Byte position at which each of the first n tokens of scale k ends: (n,) long."""
    return torch.arange(n, device=device) * k


def cross_mask(q_ends: torch.Tensor, k_ends: torch.Tensor) -> torch.Tensor:
    """(Tq, Tk) boolean mask, True where the key's span ends no later than the query's."""
    return k_ends[None, :] <= q_ends[:, None]


class Downsample(nn.Module):
    """Learned pooling of k adjacent byte embeddings (concat, Linear k*d -> d), shifted to be causal."""

    def __init__(self, d_model: int, k: int, bias: bool = False) -> None:
        super().__init__()
        self.k = k
        self.proj = nn.Linear(k * d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        n = n_tokens(T, self.k)
        shifted = F.pad(x, (0, 0, self.k - 1, 0))[:, : n * self.k]  # (B, n*k, d)
        return self.proj(shifted.reshape(B, n, self.k * d))  # (B, n, d)


class Upsample(nn.Module):
    """Back to byte resolution: token j gives k vectors (Linear d -> k*d), one per byte it serves.

    Byte t = j*k + r reads slot r of token j = t // k; the slot tells the byte how many bytes
    have passed since the token's span ended, and the token never covers a byte after t.
    """

    def __init__(self, d_model: int, k: int, bias: bool = False) -> None:
        super().__init__()
        self.k = k
        self.proj = nn.Linear(d_model, k * d_model, bias=bias)

    def forward(self, h: torch.Tensor, n_bytes: int) -> torch.Tensor:
        B, n, d = h.shape
        return self.proj(h).reshape(B, n * self.k, d)[:, :n_bytes]  # (B, T, d)
