"""One decoding step of every block, on packed weights: the KV-cached decoder's hot path.

A decoding step runs each layer on one token per row. At the bundled model's width (d_model 96)
a layer's arithmetic takes a few microseconds and the time goes to dispatching operators, 1-5 µs
each on this project's 2-core EPYC: nn.Module calls, F.rms_norm's decomposition (10 µs), Python
indexing. So a step runs each block as few operators as it can:

- weights pre-transposed to (in, out) (bench/matvec_layout.py: 2x faster for one row) and packed
  where they read the same input (q/k/v, a cross block's k/v, the SwiGLU's w1/w3);
- every RMSNorm's gain folded into the weights its output feeds, so a norm is one scale per row:
  for a single row a Python float from one dot product, applied by addmm's `alpha`;
- residual additions fused into addmm, and a self-attention's q and k rotated by one complex
  multiply.

These are second implementations of `Block`, `CrossBlock`, the pooling, upsampling, fusion and
head for one token per row; the wiring that calls them is `MultiScaleTransformer.step_states`.
tests/test_cached.py proves the decoder built on them equal to the full forward pass (logits
within 1e-5) for every architecture option, batched and alone; tests/test_step.py does so with
trained-like weights (a fresh model's gains are all 1, which a wrong fold would not show). The
packed copy costs one more copy of the weights in memory once a model has decoded.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from multiscale_transformer.model.cache import CacheView
    from multiscale_transformer.model.model import MultiScaleTransformer

Scale = float | torch.Tensor  # 1 / rms of each row: a float for one row, (R, 1) for several


class Dense(NamedTuple):
    """A linear map as addmm reads it: y = x @ weight + offset."""

    weight: torch.Tensor  # (in, out)
    offset: torch.Tensor  # (out,): the bias, or zeros (addmm then adds nothing, at no measurable cost)
    has_bias: bool


class BlockWeights(NamedTuple):
    """A `Block` (self-attention layer) with both norms folded into the projections they feed."""

    eps: float
    heads: int
    qkv: Dense  # attn_norm's gain folded in
    wo: Dense
    w13: Dense  # ffn_norm's gain folded in; up then gate
    w2: Dense


class CrossWeights(NamedTuple):
    """A `CrossBlock`: query_norm folded into q, source_norm into the packed k/v."""

    eps: float
    heads: int
    q: Dense
    kv: Dense
    wo: Dense
    w13: Dense
    w2: Dense


class StepWeights(NamedTuple):
    """Everything one decoding step reads, made once per weight version (`step_weights`)."""

    key: list[tuple[int, int]]  # each parameter's (version, data pointer) when made
    params: list[torch.Tensor]
    embedding: torch.Tensor  # (V, d)
    stacks: list[list[BlockWeights]]  # per scale, then the post-fusion layers (index n_scales)
    cross: list[list[CrossWeights]]  # per cross layer, per directed pair
    down: list[Dense | None]  # pooling of k byte vectors (k*d -> d), per scale (None at 1x)
    up: list[Dense | None]  # a token's k upsampling slots (d -> k*d), per scale
    fusion: Dense | None
    head: Dense  # norm_f's gain folded into the tied embedding: (d, V)
    head_eps: float


def dense(*linears: nn.Module, gain: torch.Tensor | None = None) -> Dense:
    """The (in, sum of outs) packing of linears that read the same input; `gain` (in,) is the
    RMSNorm gain applied to that input, folded in: W (g * x) = (W diag(g)) x."""
    for m in linears:
        if type(m) is not nn.Linear:
            raise TypeError(f"the KV-cached decoder reads plain nn.Linear weights, not {type(m).__name__}")
    weight = torch.cat([m.weight.detach() for m in linears])  # (out, in)
    if gain is not None:
        weight = weight * gain.detach()
    has_bias = linears[0].bias is not None
    offset = torch.cat([m.bias.detach() for m in linears]) if has_bias else weight.new_zeros(weight.shape[0])
    return Dense(weight.t().contiguous(), offset, has_bias)


def _block(block: nn.Module) -> BlockWeights:
    attn, ffn = block.attn, block.ffn
    assert block.attn_norm.eps == block.ffn_norm.eps
    return BlockWeights(
        block.attn_norm.eps,
        attn.n_heads,
        dense(attn.wq, attn.wk, attn.wv, gain=block.attn_norm.weight),
        dense(attn.wo),
        dense(ffn.w1, ffn.w3, gain=block.ffn_norm.weight),
        dense(ffn.w2),
    )


def _cross(block: nn.Module) -> CrossWeights:
    attn, ffn = block.attn, block.ffn
    assert block.query_norm.eps == block.source_norm.eps == block.ffn_norm.eps
    return CrossWeights(
        block.query_norm.eps,
        attn.n_heads,
        dense(attn.wq, gain=block.query_norm.weight),
        dense(attn.wk, attn.wv, gain=block.source_norm.weight),
        dense(attn.wo),
        dense(ffn.w1, ffn.w3, gain=block.ffn_norm.weight),
        dense(ffn.w2),
    )


def _key(params: list[torch.Tensor]) -> list[tuple[int, int]]:
    return [(p._version, p.data_ptr()) for p in params]


def step_weights(model: MultiScaleTransformer) -> StepWeights:
    """The model's StepWeights, cached on it and remade when any parameter changes in place (an
    optimizer step bumps `_version`) or moves (`.to()`). `drop_step_weights` forgets them: the
    decoder does so when it is created, so that it reads layers swapped in since."""
    cached = model.__dict__.get("_step_weights")
    if cached is not None and cached.key == _key(cached.params):
        return cached
    params = list(model.parameters())
    with torch.no_grad():
        cached = StepWeights(
            _key(params),
            params,
            model.tok_emb.weight.detach(),
            [[_block(b) for b in stack] for stack in (*model.stacks, model.post)],
            [[_cross(b) for b in layer] for layer in model.cross],
            [None if isinstance(m, nn.Identity) else dense(m.proj) for m in model.down],
            [None if isinstance(m, nn.Identity) else dense(m.proj) for m in model.up],
            None if model.fusion is None else dense(model.fusion),
            Dense(
                (model.tok_emb.weight.detach() * model.norm_f.weight.detach()).t().contiguous(),
                model.tok_emb.weight.new_zeros(model.config.vocab_size),
                False,
            ),
            model.norm_f.eps,
        )
    model.__dict__["_step_weights"] = cached  # a plain attribute: not a parameter, not in state_dict
    return cached


def drop_step_weights(model: nn.Module) -> None:
    model.__dict__.pop("_step_weights", None)


def inv_rms(h: torch.Tensor, eps: float) -> Scale:
    """1 / sqrt(mean(h^2) + eps) per row of h (R, d): RMSNorm without its gain. On a GPU the
    float would wait for the device at every norm, so there it stays a tensor."""
    if h.shape[0] == 1 and h.device.type == "cpu":
        flat = h.view(-1)
        return 1.0 / math.sqrt(flat.dot(flat).item() / flat.shape[0] + eps)
    return torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)


def normed(h: torch.Tensor, scale: Scale, w: Dense) -> torch.Tensor:
    """w applied to h's rows scaled by `scale` (a folded RMSNorm): (R, out)."""
    if isinstance(scale, float):
        return torch.addmm(w.offset, h, w.weight, alpha=scale)
    return torch.addmm(w.offset, h * scale, w.weight)


def linear(x: torch.Tensor, w: Dense) -> torch.Tensor:
    return torch.addmm(w.offset, x, w.weight)


def residual(h: torch.Tensor, x: torch.Tensor, w: Dense) -> torch.Tensor:
    """h + w(x), the addition fused into the multiply."""
    return torch.addmm(h + w.offset if w.has_bias else h, x, w.weight)


def rotate(x: torch.Tensor, rotation: torch.Tensor, n: int) -> torch.Tensor:
    """RoPE on n heads at once (`layers.apply_rope`'s adjacent pairs): x (R, n * hd), rotation
    (R or 1, 1, hd/2) -> (R, n, 1, hd), the layout attention reads."""
    R = x.shape[0]
    pairs = torch.view_as_complex(x.view(R, n, -1, 2))  # (R, n, hd/2)
    return torch.view_as_real(pairs * rotation).view(R, n, 1, -1)


def _swiglu(h: torch.Tensor, w: BlockWeights | CrossWeights) -> torch.Tensor:
    """h + SwiGLU(ffn_norm(h))."""
    u = normed(h, inv_rms(h, w.eps), w.w13)
    up, gate = u.chunk(2, -1)
    return residual(h, F.silu(gate).mul_(up), w.w2)


def _attend(
    h: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    w: BlockWeights | CrossWeights,
) -> torch.Tensor:
    """h + wo(attention of q (R, H, 1, hd) over k, v (R, H, L, hd))."""
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return residual(h, y.view(h.shape), w.wo)


def block_step(
    w: BlockWeights, h: torch.Tensor, rotation: torch.Tensor, cache: CacheView, mask: torch.Tensor | None
) -> torch.Tensor:
    """`Block.forward` for one new token per row, h (R, d), whose key and value join `cache`."""
    d, H = h.shape[1], w.heads
    y = normed(h, inv_rms(h, w.eps), w.qkv)  # (R, 3d)
    qk = rotate(y[:, : 2 * d], rotation, 2 * H)  # (R, 2H, 1, hd)
    k, v = cache.update(qk[:, H:], y[:, 2 * d :].view(h.shape[0], H, 1, -1))
    return _swiglu(_attend(h, qk[:, :H], k, v, mask, w), w)


def cross_source(w: CrossWeights, src: torch.Tensor, rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`CrossBlock.source_kv` for one new source token per row, src (R, d): k, v (R, H, 1, hd)."""
    d, H = src.shape[1], w.heads
    y = normed(src, inv_rms(src, w.eps), w.kv)  # (R, 2d)
    return rotate(y[:, :d], rotation, H), y[:, d:].view(src.shape[0], H, 1, -1)


def cross_attend(
    w: CrossWeights,
    h: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rotation: torch.Tensor,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """`CrossBlock.attend` for one target token per row, h (R, d), over cached source keys."""
    q = rotate(normed(h, inv_rms(h, w.eps), w.q), rotation, w.heads)
    return _swiglu(_attend(h, q, k, v, mask, w), w)


def fuse(w: StepWeights, ups: list[torch.Tensor]) -> torch.Tensor:
    """`MultiScaleTransformer.fuse` for one byte per row: ups (R, d) per scale, finest first."""
    if w.fusion is None:
        return ups[0]
    stacked = torch.cat(ups, -1)  # (R, S*d): the scales side by side, which is also their (R, S, d) stack
    gates = torch.softmax(linear(stacked, w.fusion), -1)  # (R, S)
    R, S = gates.shape
    return torch.bmm(gates.view(R, 1, S), stacked.view(R, S, -1)).view(R, -1)


def head(w: StepWeights, h: torch.Tensor) -> torch.Tensor:
    """`MultiScaleTransformer.head`: logits (R, V) from h (R, d)."""
    return normed(h, inv_rms(h, w.head_eps), w.head)
