"""Multi-head attention on F.scaled_dot_product_attention, used for self- and cross-scale attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multiscale_transformer.model.cache import CacheView
from multiscale_transformer.model.layers import apply_rope


class Attention(nn.Module):
    """Bias-free multi-head attention with RoPE on queries and keys.

    Queries come from `x`, keys and values from `src` (the same tensor for self-attention). The
    caller passes the rotary tables for the query and key positions and either `causal=True`
    (square self-attention) or a boolean `mask` (True = may attend).
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.wq = nn.Linear(d_model, d_model, bias=bias)
        self.wk = nn.Linear(d_model, d_model, bias=bias)
        self.wv = nn.Linear(d_model, d_model, bias=bias)
        self.wo = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        # view: unflatten's split of the last dimension, without its Python wrapper (see apply_rope)
        return x.view(*x.shape[:-1], self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

    def project_kv(self, src: torch.Tensor, rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated keys and values of `src` (B, S, d), each (B, H, S, hd): what a KV cache stores.
        rotation: (S, hd/2), the keys' positions."""
        return apply_rope(self.heads(self.wk(src)), rotation), self.heads(self.wv(src))

    def attend(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rotation: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Queries from x (B, T, d), rotated to their positions, over keys and values (B, H, S, hd)."""
        q = apply_rope(self.heads(self.wq(x)), rotation)  # (B, H, T, hd)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
        )
        y = self.wo(y.transpose(1, 2).flatten(-2))  # (B, T, d)
        return F.dropout(y, self.dropout, True) if self.training and self.dropout else y

    def forward(
        self,
        x: torch.Tensor,
        src: torch.Tensor,
        rope_q: torch.Tensor,
        rope_k: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: CacheView | None = None,
    ) -> torch.Tensor:
        k, v = self.project_kv(src, rope_k)
        if cache is not None:
            k, v = cache.update(k, v)  # (R, H, length, hd): everything this row has seen
        return self.attend(x, k, v, rope_q, mask, causal)
