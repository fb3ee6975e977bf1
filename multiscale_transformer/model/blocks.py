"""The layers of every stack: `Block` (self-attention, then SwiGLU) and `CrossBlock` (a target scale
attends to a source scale, then its own SwiGLU).

Each runs n new tokens of R rows at once, (R, n, d): a training batch (n = the sequence), a prefill
(n = the prompt's tokens), or a decoding step (n = 1). New keys and values join the layer's cache
view when there is one. The math is written once, folded (layers.py explains why).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from multiscale_transformer.model.attention import Attention, Mask, attend
from multiscale_transformer.model.cache import CacheView
from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.layers import (
    Dense,
    RMSNorm,
    SwiGLU,
    dense,
    heads_first,
    inv_rms,
    normed,
    packed,
    residual,
    rotate,
)


class BlockWeights(NamedTuple):
    """A `Block` folded: both norms' gains in the projections they feed."""

    qkv: Dense
    wo: Dense
    w13: Dense  # up then gate
    w2: Dense


class CrossWeights(NamedTuple):
    """A `CrossBlock` folded: query_norm in q, source_norm in the packed k/v, ffn_norm in w13."""

    q: Dense
    kv: Dense
    wo: Dense
    w13: Dense
    w2: Dense


class _Layer(nn.Module):
    """What both layers share: an attention's projections, then a pre-norm SwiGLU."""

    def _add_attention_and_ffn(self, cfg: ModelConfig) -> None:
        """Registered after the layer's own norms, in the order checkpoints and optimizers know."""
        self.attn = Attention(cfg.d_model, cfg.n_heads)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, cfg.d_ff)
        self.eps = cfg.norm_eps
        self.heads = cfg.n_heads  # plain attributes: a submodule's would cost a lookup per byte
        self.dropout = cfg.dropout

    def _folded_output(self) -> tuple[Dense, Dense, Dense]:
        """wo, then the SwiGLU's w1/w3 (ffn_norm folded in) and w2."""
        f = self.ffn
        return dense(self.attn.wo), dense(f.w1, f.w3, gain=self.ffn_norm.weight), dense(f.w2)


class Block(_Layer):
    """Pre-norm transformer layer of one stack: causal self-attention, then SwiGLU."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self._add_attention_and_ffn(cfg)

    def weights(self) -> BlockWeights:
        a = self.attn
        return packed(
            self, lambda: BlockWeights(dense(a.wq, a.wk, a.wv, gain=self.attn_norm.weight), *self._folded_output())
        )

    def forward(
        self, h: torch.Tensor, R: int, rotation: torch.Tensor, mask: Mask, cache: CacheView | None
    ) -> torch.Tensor:
        """h (R * n, d): n new tokens of each of R rows, token-major (flat, as a stack passes them
        from layer to layer), at the positions `rotation` (R or 1, n, 1, hd/2) holds; their keys and
        values join `cache` (which then returns the rows' whole past) if given. Returns (R * n, d)."""
        w, p = self.weights(), self.dropout if self.training else 0.0
        N, d = h.shape
        n, H = N // R, self.heads
        y = normed(h, inv_rms(h, self.eps), w.qkv)  # (R n, 3d)
        qk = rotate(y[:, : 2 * d], rotation, R, 2 * H)  # (R, 2H, n, hd)
        q, k, v = qk[:, :H], qk[:, H:], heads_first(y[:, 2 * d :], R, n, H)
        if cache is not None:
            k, v = cache.update(k, v)  # (R, H, L, hd): everything these rows have seen
        h = residual(h, attend(q, k, v, mask, p), w.wo, p)
        return swiglu(h, w, self.eps, p)


class CrossBlock(_Layer):
    """One directed cross-scale block: the target scale attends to a source scale, then its own FFN."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.query_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.source_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self._add_attention_and_ffn(cfg)

    def weights(self) -> CrossWeights:
        a = self.attn
        return packed(
            self,
            lambda: CrossWeights(
                dense(a.wq, gain=self.query_norm.weight),
                dense(a.wk, a.wv, gain=self.source_norm.weight),
                *self._folded_output(),
            ),
        )

    def source_kv(self, src: torch.Tensor, rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (R, H, m, hd) of m source tokens per row, src (R, m, d), rotated to the
        byte positions at which their spans end: what the cache keeps per directed pair."""
        w = self.weights()
        R, m, d = src.shape
        H = self.heads
        s = src.view(R * m, d) if src.is_contiguous() else src.reshape(R * m, d)
        y = normed(s, inv_rms(s, self.eps), w.kv)  # (R m, 2d)
        return rotate(y[:, :d], rotation, R, H), heads_first(y[:, d:], R, m, H)

    def forward(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rotation: torch.Tensor, mask: Mask
    ) -> torch.Tensor:
        """x (R, n, d): target tokens (rotated to their span ends) over source keys and values."""
        w, p = self.weights(), self.dropout if self.training else 0.0
        R, n, d = x.shape
        h = x.view(R * n, d) if x.is_contiguous() else x.reshape(R * n, d)
        q = rotate(normed(h, inv_rms(h, self.eps), w.q), rotation, R, self.heads)
        h = residual(h, attend(q, k, v, mask, p), w.wo, p)
        return swiglu(h, w, self.eps, p).view(R, n, d)


def swiglu(h: torch.Tensor, w: BlockWeights | CrossWeights, eps: float, dropout: float) -> torch.Tensor:
    """h + SwiGLU(ffn_norm(h)), h (N, d)."""
    up, gate = normed(h, inv_rms(h, eps), w.w13).chunk(2, -1)
    act = F.silu(gate)
    # in place saves an allocation per layer and byte when decoding; autograd needs the silu's output
    act = act * up if torch.is_grad_enabled() else act.mul_(up)
    return residual(h, act, w.w2, dropout)
