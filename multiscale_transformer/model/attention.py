"""Multi-head attention: its weights, and attention over cached or fresh keys with the one masking rule."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from multiscale_transformer.model.scales import may_read

# What a caller passes as `mask`: a boolean tensor (True = may attend), None (every key the call
# reads is visible: one query row reading exactly its own past), CAUSAL (square self-attention
# over a whole sequence, SDPA's fast causal path) or a Local window.
CAUSAL = "causal"


# Queries per block of local attention without autograd (at most): a block reads the window before
# it and itself, so smaller blocks read fewer keys that the mask then hides (half of them when a block
# is the window, a fifth at a quarter of it). bench/attention.py, 1 thread, a continued prefill of
# 3,878 bytes: blocks of 64 run the fine stack's attention 1.5x and the 2x stack's 2.2x faster than
# blocks of a window.
QUERY_BLOCK = 64


@dataclass(frozen=True)
class Local:
    """Windowed attention of queries 0..n-1 over keys 0..m-1, computed block by block so that no
    n x m mask or score matrix is ever built: query i ends at (offset + i) * query_step, key j at
    j * key_step, and a query reads the keys that end within `window` positions up to its own
    (scales.may_read). The window is a multiple of both steps (ModelConfig checks). An offset is a
    call that extends a cached prefix: its keys start before its queries (model.py `_mask`).
    `block`: the most queries per block (None: `QUERY_BLOCK`, read when the attention runs)."""

    window: int
    query_step: int
    key_step: int
    offset: int = 0
    block: int | None = None


Mask = torch.Tensor | str | Local | None


class Attention(nn.Module):
    """The bias-free projections of one multi-head attention (RoPE on queries and keys); the blocks
    (blocks.py) run them folded with the norm before them."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.wq = nn.Linear(d_model, d_model, bias=False)
        self.wk = nn.Linear(d_model, d_model, bias=False)
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask, dropout: float = 0.0) -> torch.Tensor:
    """Queries q (R, H, n, hd) over keys and values (R, H, L, hd): (R * n, H * hd), rows in token order."""
    if isinstance(mask, Local):
        return _local(q, k, v, mask, dropout)
    causal = isinstance(mask, str)
    y = F.scaled_dot_product_attention(
        q, k, v, attn_mask=None if causal else mask, is_causal=causal, dropout_p=dropout
    )  # (R, H, n, hd)
    R, H, n, hd = y.shape
    # one query per row: (R, H, 1, hd) is already the rows' heads side by side
    return y.view(R, H * hd) if n == 1 else y.transpose(1, 2).reshape(R * n, H * hd)


def _local(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, local: Local, dropout: float) -> torch.Tensor:
    """`attend` with a Local window: queries in blocks of bq (a window's worth split into s), each
    over its band: the keys of the s key blocks before it and of its own (bk keys each, the bytes a
    query block spans).

    Every block whose band starts at or after key 0 sees the same pattern of visible keys, so those
    blocks run as a batch of 4-D attentions under one (bq, (s + 1) bk) additive mask, the first
    blocks (whose bands begin before key 0, in zero padding) under masks of their own: the shapes
    and masks SDPA's fused CPU kernel takes (measured 4x faster, forward and backward, than the 5-D
    boolean-masked form, which falls back to plain matmuls and a softmax). Without autograd the
    bands are overlapping views of the keys, which the kernel reads in place (blocks of
    `local.block` queries: fewer hidden keys); while autograd records they are copies, one block a
    window (the backward of overlapping views measured 15-20% slower than the copies').
    """
    R, H, n, hd = q.shape
    records = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    s = 1 if records else _splits(local)
    bq, bk = local.window // local.query_step // s, local.window // local.key_step // s
    dropped = local.offset // bq  # whole blocks of queries before the call's first: never computed
    skip = local.offset - dropped * bq  # queries before the call's first in its first block: padding, dropped
    nb = -(-(skip + n) // bq)
    # Block b's band starts s key blocks before its own: key block dropped + b - s, before key 0
    # (in padding) for the first `padded` blocks.
    padded = max(0, s - dropped)
    front = (dropped - s + padded) * bk  # keys before the first band: never read
    length = (nb + s) * bk
    q = _padded(q, skip, nb * bq)  # (R, H, nb bq, hd)
    k, v = (_padded(x[:, :, front : front + length - padded * bk], padded * bk, length) for x in (k, v))
    # (nb, R H, bq, hd) queries and (nb, R H, (s + 1) bk, hd) bands: block-major, the first blocks first
    if records:
        q = q.view(R, H, nb, bq, hd).permute(2, 0, 1, 3, 4).reshape(nb, R * H, bq, hd)
        k, v = (x.view(R, H, nb + s, bk, hd).permute(2, 0, 1, 3, 4) for x in (k, v))  # (nb + s, R, H, bk, hd)
        k, v = (torch.cat([x[i : i + nb] for i in range(s + 1)], 3).view(nb, R * H, -1, hd) for x in (k, v))
    else:
        q = q.as_strided((nb, R * H, bq, hd), (bq * hd, nb * bq * hd, hd, 1))
        k, v = (x.as_strided((nb, R * H, (s + 1) * bk, hd), (bk * hd, length * hd, hd, 1)) for x in (k, v))
    band = _band_mask(local, s, bq, bk, q.dtype, q.device)
    first = min(padded, nb)
    y = []
    if first:  # block b < padded: the first padded - b key blocks of its band are padding
        key_block = torch.arange((s + 1) * bk, device=q.device) // bk
        mask = torch.stack([band.masked_fill(key_block < padded - b, float("-inf")) for b in range(first)])
        y.append(F.scaled_dot_product_attention(q[:first], k[:first], v[:first], mask[:, None], dropout))
    if nb > first:
        y.append(F.scaled_dot_product_attention(q[first:], k[first:], v[first:], attn_mask=band, dropout_p=dropout))
    out = torch.cat(y) if len(y) > 1 else y[0]  # (nb, R H, bq, hd)
    out = out.view(nb, R, H, bq, hd).permute(1, 0, 3, 2, 4).reshape(R, nb * bq, H * hd)[:, skip : skip + n]
    return out.reshape(R * n, H * hd)


def _padded(x: torch.Tensor, before: int, length: int) -> torch.Tensor:
    """x (R, H, L, hd) after `before` zero positions and before as many as make `length`, in a new
    contiguous tensor (the layout `_local`'s views need); only the padding is zeroed."""
    R, H, L, hd = x.shape
    out = x.new_empty(R, H, length, hd)
    out[:, :, :before].zero_()
    out[:, :, before : before + L].copy_(x)
    out[:, :, before + L :].zero_()
    return out


def _splits(local: Local) -> int:
    """Into how many blocks a window's worth of queries splits: the fewest that make blocks of at
    most `local.block` queries, each spanning a whole number of keys (else the most that do)."""
    bq, bk = local.window // local.query_step, local.window // local.key_step
    block = QUERY_BLOCK if local.block is None else local.block
    fits = [s for s in range(1, min(bq, bk) + 1) if bq % s == 0 and bk % s == 0]
    return next((s for s in fits if bq // s <= block), fits[-1])


def _band_mask(local: Local, s: int, bq: int, bk: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The additive (bq, (s + 1) bk) mask of a block whose band lies wholly at or after key 0, from
    the one masking rule (scales.may_read)."""
    query_ends = (s * bq + torch.arange(bq, device=device)) * local.query_step
    key_index = torch.arange((s + 1) * bk, device=device)  # the s blocks before, then the query's own
    band = may_read(query_ends, key_index * local.key_step, local.window)
    return torch.zeros(band.shape, dtype=dtype, device=device).masked_fill_(~band, float("-inf"))
