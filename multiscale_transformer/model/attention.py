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


@dataclass(frozen=True)
class Local:
    """Windowed attention of queries 0..n-1 over keys 0..m-1, computed block by block so that no
    n x m mask or score matrix is ever built: query i ends at (offset + i) * query_step, key j at
    j * key_step, and a query reads the keys that end within `window` positions up to its own
    (scales.may_read). The window is a multiple of both steps (ModelConfig checks). An offset is a
    call that extends a cached prefix: its keys start before its queries (model.py `_mask`)."""

    window: int
    query_step: int
    key_step: int
    offset: int = 0


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
    """`attend` with a Local window: queries in blocks of window / query_step, each over the keys
    of its own block of window / key_step and the block before.

    Every block after the first sees the same band of those 2 bk keys, so the blocks run as a batch
    of 4-D attentions under one (bq, 2 bk) additive mask, the first block apart under its own: the
    shapes and mask SDPA's fused CPU kernel takes (measured 4x faster, forward and backward, than the
    5-D boolean-masked form, which falls back to plain matmuls and a softmax).
    """
    R, H, n, hd = q.shape
    bq, bk = local.window // local.query_step, local.window // local.key_step
    skip = local.offset  # queries before the call's first: padding, computed and dropped
    nb = -(-(skip + n) // bq)
    # (nb R, H, bq, hd): block-major, so the first block's rows come first
    q = F.pad(q, (0, 0, skip, nb * bq - n - skip)).view(R, H, nb, bq, hd)
    q = q.permute(2, 0, 1, 3, 4).reshape(nb * R, H, bq, hd)
    total = (nb + 1) * bk  # bk zeros before key 0, then keys up to the last block's end

    def blocks(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, bk, max(0, total - bk - x.shape[2])))[:, :, :total]
        x = x.view(R, H, nb + 1, bk, hd).permute(2, 0, 1, 3, 4)  # (nb + 1, R, H, bk, hd)
        return torch.cat([x[:-1], x[1:]], 3).reshape(nb * R, H, 2 * bk, hd)  # each block after the one before

    k, v = blocks(k), blocks(v)
    first, band = _band_masks(local, bq, bk, q.dtype, q.device)
    y = [F.scaled_dot_product_attention(q[:R], k[:R], v[:R], attn_mask=first, dropout_p=dropout)]
    if nb > 1:
        y.append(F.scaled_dot_product_attention(q[R:], k[R:], v[R:], attn_mask=band, dropout_p=dropout))
    out = torch.cat(y) if nb > 1 else y[0]  # (nb R, H, bq, hd)
    out = out.view(nb, R, H, bq, hd).permute(1, 0, 3, 2, 4).reshape(R, nb * bq, H * hd)[:, skip : skip + n]
    return out.reshape(R * n, H * hd)


def _band_masks(local: Local, bq: int, bk: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Additive (bq, 2 bk) masks of the first block (the keys before it are padding) and of every
    later one, from the one masking rule (scales.may_read)."""
    query_ends = (bq + torch.arange(bq, device=device)) * local.query_step  # a block after the first
    key_index = torch.arange(2 * bk, device=device)  # the block before, then the query's own block
    band = may_read(query_ends, key_index * local.key_step, local.window)
    first = band & (key_index >= bk)
    return tuple(
        torch.zeros(m.shape, dtype=dtype, device=device).masked_fill_(~m, float("-inf")) for m in (first, band)
    )
