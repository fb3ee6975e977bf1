"""KV caches: preallocated key/value buffers per batch row, written at each row's own positions.

Rows are independent so that sequences of different lengths (and a server's requests that start
at different times) share one batch. `ModelCache` holds every buffer a model's decoding needs; a
`CacheView` names which rows and positions one layer's call writes and how many keys it reads back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.scales import n_tokens


class KVCache:
    """Keys and values (batch, n_heads, max_len, head_dim) of one attention layer. Plain attributes,
    not an nn.Module's buffers: a decoding step reads them a few times per layer, and a module's
    attribute lookup costs about a microsecond each time."""

    def __init__(self, batch: int, n_heads: int, max_len: int, head_dim: int, device: torch.device | str) -> None:
        shape = (batch, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device)
        self.v = torch.zeros(shape, device=device)


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
    def of(cls, cache: KVCache, rows: list[int], first: list[int], n: int, length: int) -> CacheView:
        """Rows `rows` write n keys each at positions first[r] .. first[r] + n - 1, then read `length`."""
        if len(rows) == 1 and n == 1:
            return cls(cache, None, None, length, (rows[0], first[0]))
        device = cache.k.device
        pos = torch.tensor(first, device=device)[:, None] + torch.arange(n, device=device)  # (R, n)
        return cls(cache, torch.tensor(rows, device=device), pos, length)

    @classmethod
    def reader(cls, cache: KVCache, rows: list[int], length: int) -> CacheView:
        """Rows `rows` read their first `length` keys and write none."""
        if len(rows) == 1:
            return cls(cache, None, None, length, (rows[0], 0))
        return cls(cache, torch.tensor(rows, device=cache.k.device), None, length)

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


class Rows(NamedTuple):
    """A model call's rows of a ModelCache (`ModelCache.at`)."""

    cache: ModelCache
    rows: list[int]
    start: list[int]  # the byte position of each row's first new byte


class ModelCache:
    """Everything a model keeps between calls for `batch` rows of up to `max_len` bytes each.

    - `self_kv[stack][layer]`: keys and values of each self-attention layer, per scale's stack
      (tokens of that scale), then of the post-fusion layers (stack n_scales, one per byte);
    - `cross_kv[layer][pair]`: the source scale's keys and values of each directed cross block;
    - `pooled`: per byte, what the coarser scales pool (ModelConfig.coarse_input), because a
      token's span reaches back k-1 bytes into earlier calls;
    - `slots[scale]`: per byte, the upsampled slot (B, max_len, d) of the coarser scale's token that
      serves it, written when that token ends, so that any cached prefix can be extended.
    """

    def __init__(self, cfg: ModelConfig, batch: int, device: torch.device | str = "cpu") -> None:
        max_len = cfg.max_seq_len
        sizes = [n_tokens(max_len, k) for k in cfg.downsample_factors] + [max_len]
        depths = [*cfg.scale_depths, cfg.post_fusion_layers]

        def kv(n: int) -> KVCache:
            return KVCache(batch, cfg.n_heads, n, cfg.head_dim, device)

        self.self_kv = [[kv(sizes[s]) for _ in range(n)] for s, n in enumerate(depths)]
        self.cross_kv = [[kv(sizes[s]) for s, _ in cfg.directed_pairs] for _ in range(cfg.n_cross_attn_layers)]
        self.pooled = torch.zeros(batch, max_len, cfg.d_model, device=device)
        self.slots = {
            s: torch.zeros(batch, max_len, cfg.d_model, device=device)
            for s, k in enumerate(cfg.downsample_factors)
            if k > 1
        }

    def at(self, rows: Sequence[int], start: Sequence[int]) -> Rows:
        """Where a call's rows live in this cache and the byte position of each one's first new byte."""
        return Rows(self, [int(r) for r in rows], [int(p) for p in start])

    @property
    def batch_size(self) -> int:
        return self.pooled.shape[0]

    def keep_pooled(self, rows: list[int], start: list[int], h: torch.Tensor) -> None:
        """What the coarser scales pool at the call's bytes, h (R, T, d)."""
        if len(rows) == 1 and h.shape[1] == 1:
            self.pooled[rows[0], start[0]] = h[0, 0]
            return
        device = self.pooled.device
        pos = torch.tensor(start, device=device)[:, None] + torch.arange(h.shape[1], device=device)
        self.pooled[torch.tensor(rows, device=device)[:, None], pos] = h

    def before(self, rows: list[int], start: list[int], width: int) -> torch.Tensor:
        """The `width` pooled vectors before each row's start (zeros before byte 0): (R, width, d)."""
        if len(rows) == 1 and start[0] >= width:  # the steady state of decoding: a plain slice
            return self.pooled[rows[0], start[0] - width : start[0]][None]
        device = self.pooled.device
        pos = torch.tensor(start, device=device)[:, None] + torch.arange(-width, 0, device=device)  # (R, width)
        picked = self.pooled[torch.tensor(rows, device=device)[:, None], pos.clamp(min=0)]
        return picked * (pos >= 0)[..., None]
