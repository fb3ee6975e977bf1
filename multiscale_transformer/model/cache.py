"""KV caches: preallocated rings of key/value buffers per batch row, written at each row's own positions.

Rows are independent so that sequences of different lengths (and a server's requests that start
at different times) share one batch. `ModelCache` holds every buffer a model's decoding needs; a
`CacheView` names which rows and positions one layer's call writes and which keys it reads back.

Every buffer is a ring: position p lives in slot p % capacity. Within the context nothing wraps
(the capacity is the context plus the widest downsampling factor), so a cached prefix can always be
extended. A model whose every attention is windowed (ModelConfig.rolling) decodes on past the
context: a query reads only the keys of its window, which the ring still holds, so memory is set by
the context however long generation runs, and no window is ever recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.scales import n_tokens


def stretch(first: int, n: int, capacity: int) -> slice | None:
    """The ring slots of positions first .. first + n - 1 when they lie in one stretch of the ring (a
    slice: views and plain copies), else None (the ring wraps among them: index slot by slot)."""
    if first // capacity != (first + n - 1) // capacity:
        return None
    i = first % capacity
    return slice(i, i + n)


class KVCache:
    """Keys and values (batch, n_heads, capacity, head_dim) of one attention layer. Plain attributes,
    not an nn.Module's buffers: a decoding step reads them a few times per layer, and a module's
    attribute lookup costs about a microsecond each time."""

    def __init__(self, batch: int, n_heads: int, capacity: int, head_dim: int, device: torch.device | str) -> None:
        shape = (batch, n_heads, capacity, head_dim)
        self.k = torch.zeros(shape, device=device)
        self.v = torch.zeros(shape, device=device)
        self.capacity = capacity


@dataclass(frozen=True)
class CacheView:
    """Rows (R,) of `cache`, the positions (R, S) at which this call's S new keys go, and the keys
    it reads back: positions `first` .. `length` - 1 of every row.

    The caller masks what a row may not read (shorter rows, windows). `at` = (row, slot) when the
    call writes the keys of one row into one stretch of the ring from `slot` on (a decoding step,
    a one-row prefill): plain slice copies instead of index_put and gathers.
    """

    cache: KVCache
    rows: torch.Tensor | None  # None with `at`
    slots: torch.Tensor | None  # (R, S) ring slots of the new keys; None with `at` or when reading only
    length: int
    first: int = 0
    at: tuple[int, int] | None = None
    every_row: bool = False  # rows are 0 .. batch - 1 in order: reads need no gather

    @classmethod
    def of(cls, cache: KVCache, rows: list[int], first: list[int], n: int, length: int, lo: int = 0) -> CacheView:
        """Rows `rows` write n keys each at positions first[r] .. first[r] + n - 1, then read keys lo .. length - 1."""
        if len(rows) == 1 and stretch(first[0], n, cache.capacity) is not None:
            return cls(cache, None, None, length, lo, (rows[0], first[0] % cache.capacity))
        device = cache.k.device
        pos = torch.tensor(first, device=device)[:, None] + torch.arange(n, device=device)  # (R, n)
        every = rows == list(range(cache.k.shape[0]))
        return cls(cache, torch.tensor(rows, device=device), pos % cache.capacity, length, lo, every_row=every)

    @classmethod
    def reader(cls, cache: KVCache, rows: list[int], length: int, lo: int = 0) -> CacheView:
        """Rows `rows` read keys lo .. length - 1 and write none."""
        if len(rows) == 1:
            return cls(cache, None, None, length, lo, (rows[0], 0))
        every = rows == list(range(cache.k.shape[0]))
        return cls(cache, torch.tensor(rows, device=cache.k.device), None, length, lo, every_row=every)

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (R, H, S, hd) and return the cached keys/values read, (R, H, length - first, hd)."""
        self.write(k, v)
        return self.read()

    def write(self, k: torch.Tensor, v: torch.Tensor) -> None:
        if self.at is not None:  # narrow + copy_: fewer dispatched operators than indexing
            row, slot = self.at
            self.cache.k.narrow(0, row, 1).narrow(2, slot, k.shape[2]).copy_(k)
            self.cache.v.narrow(0, row, 1).narrow(2, slot, v.shape[2]).copy_(v)
            return
        assert self.rows is not None and self.slots is not None
        index = (self.rows[:, None], slice(None), self.slots)  # selects (R, S, H, hd)
        self.cache.k[index] = k.transpose(1, 2)
        self.cache.v[index] = v.transpose(1, 2)

    def read(self) -> tuple[torch.Tensor, torch.Tensor]:
        k, v, cap = self.cache.k, self.cache.v, self.cache.capacity
        lo, hi = self.first, self.length
        # Rows first where that is a view (one row, or all); any other subset after the positions
        # are cut out, so that the gather copies only the keys read, not each row's whole ring.
        rows = None if self.at is not None or self.every_row else self.rows
        if self.at is not None or (rows is not None and rows.numel() == 1):
            row = self.at[0] if self.at is not None else int(rows[0])  # type: ignore[index]
            k, v, rows = k.narrow(0, row, 1), v.narrow(0, row, 1), None
        one = stretch(lo, hi - lo, cap)
        if one is not None:
            k, v = k[:, :, one], v[:, :, one]
        elif hi - lo <= cap:  # wrapped once: the ring's end, then its start (keys in position order)
            a, b = lo % cap, (hi - 1) % cap + 1
            k, v = torch.cat([k[:, :, a:], k[:, :, :b]], 2), torch.cat([v[:, :, a:], v[:, :, :b]], 2)
        else:
            # Rows far apart (one past the context, one near its start): every position of the range,
            # a slot read once per position that maps to it; each row's mask keeps only what it holds.
            slots = torch.arange(lo, hi, device=k.device) % cap
            k, v = k[:, :, slots], v[:, :, slots]
        return (k, v) if rows is None else (k[rows], v[rows])


class Rows(NamedTuple):
    """A model call's rows of a ModelCache (`ModelCache.at`)."""

    cache: ModelCache
    rows: list[int]
    start: list[int]  # the byte position of each row's first new byte


class ModelCache:
    """Everything a model keeps between calls for `batch` rows, each a ring of `capacity` bytes.

    - `self_kv[stack][layer]`: keys and values of each self-attention layer, per scale's stack
      (tokens of that scale), then of the post-fusion layers (stack n_scales, one per byte);
    - `cross_kv[layer][pair]`: the source scale's keys and values of each directed cross block;
    - `pooled`: per byte, what the coarser scales pool (ModelConfig.coarse_input), because a
      token's span reaches back k-1 bytes into earlier calls;
    - `slots[scale]`: per byte, the upsampled slot (B, capacity, d) of the coarser scale's token
      that serves it, written when that token ends, so that any cached prefix can be extended.
    """

    def __init__(self, cfg: ModelConfig, batch: int, device: torch.device | str = "cpu") -> None:
        # A token's slots reach k - 1 bytes past its end: room for them past the context, so that
        # nothing a prefix inside the context holds is overwritten before the row rolls.
        self.capacity = capacity = cfg.max_seq_len + max(cfg.downsample_factors)
        sizes = [n_tokens(capacity, k) for k in cfg.downsample_factors] + [capacity]
        depths = [*cfg.scale_depths, cfg.post_fusion_layers]

        def kv(n: int) -> KVCache:
            return KVCache(batch, cfg.n_heads, n, cfg.head_dim, device)

        self.self_kv = [[kv(sizes[s]) for _ in range(n)] for s, n in enumerate(depths)]
        self.cross_kv = [[kv(sizes[s]) for s, _ in cfg.directed_pairs] for _ in range(cfg.n_cross_attn_layers)]
        self.pooled = torch.zeros(batch, capacity, cfg.d_model, device=device)
        self.slots = {
            s: torch.zeros(batch, capacity, cfg.d_model, device=device)
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
        one = stretch(start[0], h.shape[1], self.capacity) if len(rows) == 1 else None
        if one is not None:  # one row in one stretch of the ring: a decoding step, a prefill
            self.pooled[rows[0], one] = h[0]
            return
        device = self.pooled.device
        pos = torch.tensor(start, device=device)[:, None] + torch.arange(h.shape[1], device=device)
        self.pooled[torch.tensor(rows, device=device)[:, None], pos % self.capacity] = h

    def before(self, rows: list[int], start: list[int], width: int) -> torch.Tensor:
        """The `width` pooled vectors before each row's start (zeros before byte 0): (R, width, d)."""
        one = stretch(start[0] - width, width, self.capacity) if len(rows) == 1 and start[0] >= width else None
        if one is not None:  # the steady state of decoding: a plain slice
            return self.pooled[rows[0], one][None]
        device = self.pooled.device
        pos = torch.tensor(start, device=device)[:, None] + torch.arange(-width, 0, device=device)  # (R, width)
        picked = self.pooled[torch.tensor(rows, device=device)[:, None], pos.clamp(min=0) % self.capacity]
        return picked * (pos >= 0)[..., None]
