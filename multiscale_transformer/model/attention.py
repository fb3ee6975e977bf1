"""Multi-head attention: its weights, and attention over cached or fresh keys with the one masking rule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# What a caller passes as `mask`: a boolean tensor (True = may attend), None (every key the call
# reads is visible: one query row reading exactly its own past), or CAUSAL (square self-attention
# over a whole sequence, SDPA's fast causal path).
CAUSAL = "causal"
Mask = torch.Tensor | str | None


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
    causal = isinstance(mask, str)
    y = F.scaled_dot_product_attention(
        q, k, v, attn_mask=None if causal else mask, is_causal=causal, dropout_p=dropout
    )  # (R, H, n, hd)
    R, H, n, hd = y.shape
    # one query per row: (R, H, 1, hd) is already the rows' heads side by side
    return y.view(R, H * hd) if n == 1 else y.transpose(1, 2).reshape(R * n, H * hd)
