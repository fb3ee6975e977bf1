"""KV caches: preallocated key/value buffers per batch row, written at each row's own positions.

Rows are independent so that sequences of different lengths (and a server's requests that start
at different times) share one batch. A CacheView names which rows and positions one call writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


class KVCache(nn.Module):
    def __init__(self, batch: int, n_heads: int, max_len: int, head_dim: int) -> None:
        super().__init__()
        shape = (batch, n_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape), persistent=False)
        self.register_buffer("v", torch.zeros(shape), persistent=False)

    def clear(self) -> None:
        self.k.zero_()
        self.v.zero_()


@dataclass(frozen=True)
class CacheView:
    """Rows (R,) of `cache` and the positions (R, S) at which this call's S new keys go.

    `length` is how many cached positions the call then reads back (the longest row's extent);
    shorter rows must be masked by the caller. `at` = (row, position) when the call writes one key of
    one row, the decoding steady state: plain slice copies instead of index_put and gathers.
    """

    cache: KVCache
    rows: torch.Tensor | None  # None with `at`
    pos: torch.Tensor | None
    length: int
    at: tuple[int, int] | None = None

    @classmethod
    def one(cls, cache: KVCache, row: int, pos: int, length: int) -> CacheView:
        return cls(cache, None, None, length, (row, pos))

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (R, H, S, hd) and return every cached key/value of the rows, (R, H, length, hd)."""
        self.write(k, v)
        return self.read()

    def write(self, k: torch.Tensor, v: torch.Tensor) -> None:
        if self.at is not None:  # narrow + copy_: fewer dispatched operators than indexing
            row, pos = self.at
            self.cache.k.narrow(0, row, 1).narrow(2, pos, 1).copy_(k)
            self.cache.v.narrow(0, row, 1).narrow(2, pos, 1).copy_(v)
            return
        assert self.rows is not None and self.pos is not None
        index = (self.rows[:, None], slice(None), self.pos)  # selects (R, S, H, hd)
        self.cache.k[index] = k.transpose(1, 2)
        self.cache.v[index] = v.transpose(1, 2)

    def read(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.at is not None:
            row = self.at[0]
            return self.cache.k[row : row + 1, :, : self.length], self.cache.v[row : row + 1, :, : self.length]
        assert self.rows is not None
        if self.rows.numel() == self.cache.k.shape[0]:
            return self.cache.k[:, :, : self.length], self.cache.v[:, :, : self.length]
        return self.cache.k[self.rows, :, : self.length], self.cache.v[self.rows, :, : self.length]


class StepCaches(Protocol):
    """Where one incremental step (one new byte per row) reads and writes keys and values.

    Rows are named by their index into the step's rows; `pos` is each row's new key's position
    and `length` how many keys the call reads back (self_view's scale n_scales names the layers after
    the fusion, one token per byte). `keep_pooled` stores what the coarser scales pool
    at the new bytes (ModelConfig.coarse_input); `byte_window` gives, for each of the rows, those
    vectors of the k bytes that end at its new byte (zeros before the start of the row).
    """

    def keep_pooled(self, h: torch.Tensor) -> None: ...

    def self_view(self, scale: int, layer: int, rows: list[int], pos: list[int], length: int) -> CacheView: ...

    def cross_view(self, layer: int, pair: int, rows: list[int], pos: list[int], length: int) -> CacheView: ...

    def byte_window(self, rows: list[int], k: int) -> torch.Tensor: ...


class PassCaches(Protocol):
    """Where one full pass over a window stores keys and values (the decoder's prefill).

    `MultiScaleTransformer.scale_states` asks for the view of each self-attention layer and of each
    directed cross-scale block; the cached decoder answers with the views of the rows it prefills.
    `keep_pooled` stores what the coarser scales pool (B, T, d), for the steps that follow.
    """

    def keep_pooled(self, h: torch.Tensor) -> None: ...

    def self_view(self, scale: int, layer: int, n_tokens: int) -> CacheView: ...

    def cross_view(self, layer: int, pair: int, n_source: int) -> CacheView: ...
