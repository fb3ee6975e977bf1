"""The multi-scale bookkeeping in one place: causal pooling, span ends, cross-scale masks, upsampling.

Causality rule (Hourglass-style shift): before pooling a scale of factor k the byte stream is
shifted right by k-1 (zeros in front), so coarse token j covers bytes j*k-k+1 .. j*k and *ends*
at byte j*k. Byte t then reads token t // k, which ends at or before t. Every cross-scale
attention mask compares span ends: a query may read a key only if the key's span ends at or
before the query's. Token 0 of every scale ends at byte 0, so no query row is ever empty.
Nothing is padded at the end, so lengths that are not multiples of k carry no padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def n_tokens(n_bytes: int, k: int) -> int:
    """Tokens at scale k for a sequence of n_bytes bytes: one per byte position divisible by k."""
    return (n_bytes - 1) // k + 1 if n_bytes > 0 else 0


def may_read(query_ends: torch.Tensor, key_ends: torch.Tensor, window: int = 0) -> torch.Tensor:
    """The masking rule of every attention in the model, (..., n, m) from query_ends (..., n) and
    key_ends (..., m): a query reads a key whose span ends no later than its own, and with a window
    (0: none) no earlier than `window` positions before it."""
    ok = key_ends[..., None, :] <= query_ends[..., :, None]
    if window:
        ok &= key_ends[..., None, :] > query_ends[..., :, None] - window
    return ok


def visible(query_ends: torch.Tensor, key_step: int, n_keys: int, window: int = 0, first: int = 0) -> torch.Tensor:
    """`may_read` for keys first .. first + n_keys - 1, key i ending at i * key_step (in a stack's
    token positions: key_step 1). query_ends (R or 1, n) -> (R or 1, 1, n, n_keys), SDPA's boolean mask."""
    key_ends = torch.arange(first, first + n_keys, device=query_ends.device) * key_step
    return may_read(query_ends, key_ends, window)[:, None]


@dataclass(frozen=True)
class Span:
    """The tokens of one scale (factor k) whose spans end among one call's bytes.

    A call brings T new bytes per row, row r's first at byte position start[r]; a token j is new
    when its span's end j*k is one of them. `rows` are the call's rows that have any (indices into
    the call's rows); each has n, the first being `first[i]`. Rows of one call either all start at
    the same position or bring one byte each (a decoding step), so n is the same for every row and
    the first new token's end sits `offset` bytes into every row's chunk.
    """

    k: int
    rows: list[int]
    first: list[int]
    n: int
    offset: int

    @classmethod
    def of(cls, start: list[int], T: int, k: int) -> Span | None:
        """The new tokens of scale k, or None when no row completes one."""
        rows, first, counts = [], [], set()
        for r, p in enumerate(start):
            j0, j1 = -(-p // k), (p + T - 1) // k  # first and last token ending in p .. p+T-1
            if j1 >= j0:
                rows.append(r)
                first.append(j0)
                counts.add(j1 - j0 + 1)
        if not rows:
            return None
        offsets = {first[i] * k - start[r] for i, r in enumerate(rows)}
        if len(counts) > 1 or len(offsets) > 1:
            raise ValueError("the rows of one call must start at the same position or bring one byte each")
        return cls(k, rows, first, counts.pop(), offsets.pop())

    def positions(self, device: torch.device | None = None) -> torch.Tensor:
        """The new tokens' indices in their stack: (R_s, n), or (1, n) when every row has the same
        (times k: the byte positions at which they end)."""
        firsts = self.first if len(set(self.first)) > 1 else self.first[:1]
        return torch.tensor(firsts, device=device)[:, None] + torch.arange(self.n, device=device)


class Downsample(nn.Module):
    """Learned pooling of k adjacent byte vectors (concat, Linear k*d -> d) into the token whose
    span they are: bytes j*k-k+1 .. j*k, so token j ends at byte j*k (causal by construction)."""

    def __init__(self, d_model: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.proj = nn.Linear(k * d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, before: torch.Tensor | None, span: Span) -> torch.Tensor:
        """The span's new tokens (R, n, d) from the call's bytes x (R, T, d) and the k-1 byte vectors
        before them (R, k-1, d) (None: the call starts at byte 0, before which lie zeros)."""
        R, _, d = x.shape
        if before is None:
            before = x.new_zeros(R, self.k - 1, d)
        window = torch.cat([before, x], 1)[:, span.offset : span.offset + span.n * self.k]  # (R, n*k, d)
        return self.proj(window.reshape(R, span.n, self.k * d))


class Upsample(nn.Module):
    """Back to byte resolution: token j gives k vectors (Linear d -> k*d), one per byte it serves.

    Byte t = j*k + r reads slot r of token j = t // k; the slot tells the byte how many bytes
    have passed since the token's span ended, and the token never covers a byte after t.
    """

    def __init__(self, d_model: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.proj = nn.Linear(d_model, k * d_model, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Slots (R, n*k, d) of tokens h (R, n, d), in byte order."""
        R, n, d = h.shape
        return self.proj(h).view(R, n * self.k, d)
