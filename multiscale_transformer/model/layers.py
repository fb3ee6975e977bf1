"""Small building blocks: RMSNorm, the SwiGLU's weights, rotary position embedding, and the folded
linear algebra every layer runs on (`Dense`, `normed`, `residual`).

Why folded: decoding runs each layer on one token per row. At the bundled model's width (d_model 96)
a layer's arithmetic takes a few microseconds and the time goes to dispatching operators, 1-5 µs
each on a 2-core EPYC: nn.Module calls, F.rms_norm's decomposition (10 µs), Python indexing. So a
layer runs as few operators as it can, for one token or for a training batch alike:

- weights transposed to (in, out) for addmm (bench/matvec_layout.py: 2x faster for one row) and
  packed where they read the same input (q/k/v, a cross block's k/v, the SwiGLU's w1/w3);
- every RMSNorm's gain folded into the weights its output feeds, so a norm is one scale per row:
  for a single row a Python float from one dot product, applied by addmm's `alpha`;
- residual additions fused into addmm.

The parameters stay as the checkpoints and the GGUF export name them (wq, wk, wv, the norms'
gains, ...); `packed` derives the folded weights from them: on every call while autograd records
(so gradients reach the parameters), and once per weight version otherwise (measured in
docs/architecture.md: a decoded byte runs twice as fast as through unfolded nn.Linear modules).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

T = TypeVar("T")
Scale = float | torch.Tensor  # 1 / rms of each row: a float for one row, (N, 1) for several


class RMSNorm(nn.Module):
    """The gain of an RMSNorm; layers fold it into the weights that read the norm's output."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class SwiGLU(nn.Module):
    """The weights of FFN(x) = W2 (W1 x * SiLU(W3 x)), the AXL feed-forward (W1 "up", W3 "gate" in
    llama.cpp terms); blocks.py runs it folded (`swiglu`)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)


class Dense(NamedTuple):
    """A linear map as addmm reads it: y = x @ weight + offset."""

    weight: torch.Tensor  # (in, out)
    offset: torch.Tensor  # (out,) zeros: addmm needs an input to add to, at no measurable cost for one row


def dense(*linears: nn.Linear, gain: torch.Tensor | None = None) -> Dense:
    """The (in, sum of outs) packing of linears that read the same input; `gain` (in,) is the
    RMSNorm gain applied to that input, folded in: W (g * x) = (W diag(g)) x."""
    for m in linears:  # a subclass (a quantized layer, say) may compute something its weight does not say
        if type(m) is not nn.Linear:
            raise TypeError(f"the model's layers read plain nn.Linear weights, not {type(m).__name__}")
    weight = torch.cat([m.weight for m in linears])  # (out, in)
    if gain is not None:
        weight = weight * gain
    return Dense(weight.t(), weight.new_zeros(weight.shape[0]))


def packed(module: nn.Module, make: Callable[[], T], params: list[nn.Parameter] | None = None) -> T:
    """make()'s folded weights of `module`: remade on every call while autograd records, otherwise
    kept on the module until one of `params` (default: the module's) changes in place (an optimizer
    step bumps `_version`) or moves (`.to()`). `forget_packed` drops them (weights set through
    `.data` keep their version: the decoder forgets on creation)."""
    if torch.is_grad_enabled():
        return make()
    state = module.__dict__
    if "_packed_params" not in state:
        state["_packed_params"] = list(module.parameters()) if params is None else params
    params = state["_packed_params"]
    key = [(p._version, p.data_ptr()) for p in params]
    cached = state.get("_packed")
    if cached is not None and cached[0] == key:
        return cached[1]
    with torch.no_grad():
        value = make()
        if isinstance(value, tuple):  # contiguous (in, out) copies: the layout addmm reads fastest
            value = _contiguous(value)
    state["_packed"] = (key, value)
    return value


def _contiguous(value: T) -> T:
    if isinstance(value, torch.Tensor):
        return value.contiguous()  # type: ignore[return-value]
    if isinstance(value, tuple):
        return type(value)(*(_contiguous(v) for v in value)) if hasattr(value, "_fields") else value
    return value


def forget_packed(model: nn.Module) -> None:
    for module in model.modules():
        module.__dict__.pop("_packed", None)
        module.__dict__.pop("_packed_params", None)


def inv_rms(h: torch.Tensor, eps: float) -> Scale:
    """1 / sqrt(mean(h^2) + eps) per row of h (N, d): RMSNorm without its gain. On a GPU the
    float would wait for the device at every norm, so there it stays a tensor."""
    if h.shape[0] == 1 and h.device.type == "cpu" and not h.requires_grad:
        flat = h.view(-1)
        return 1.0 / math.sqrt(flat.dot(flat).item() / flat.shape[0] + eps)
    return torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)


def normed(h: torch.Tensor, scale: Scale, w: Dense) -> torch.Tensor:
    """w applied to h's rows scaled by `scale` (a folded RMSNorm): (N, out)."""
    if isinstance(scale, float):
        return torch.addmm(w.offset, h, w.weight, alpha=scale)
    # several rows: addmm would first copy its offset into the whole output (3 ms of a 250 ms prefill)
    return torch.mm(h * scale, w.weight)


def residual(h: torch.Tensor, x: torch.Tensor, w: Dense, dropout: float = 0.0) -> torch.Tensor:
    """h + w(x), the addition fused into the multiply (dropout on w(x) while training)."""
    if dropout:
        return h + F.dropout(x @ w.weight, dropout, True)
    return torch.addmm(h, x, w.weight)


def rope_tables(head_dim: int, max_pos: int, theta: float) -> torch.Tensor:
    """Unit complex rotations e^(i * pos * freq), shape (max_pos, head_dim // 2), complex64."""
    return rope_at(torch.arange(max_pos), head_dim, theta)


def rope_at(positions: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
    """The rotations of `positions` (any shape) -> (*shape, head_dim // 2), complex64. Angles in
    float64: at position 1e5 a float32 angle would be off by ~0.01 rad, and rolling decoding
    (model/cache.py) reaches such positions; attention sees only differences of positions."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = positions.to(torch.float64, copy=False)[..., None] * inv_freq
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def rotate(y: torch.Tensor, rotation: torch.Tensor, R: int, heads: int) -> torch.Tensor:
    """RoPE on `heads` heads at once: y (R * n, heads * hd) rows of R sequences of n tokens,
    rotation (R or 1, n, 1, hd/2) -> (R, heads, n, hd), the layout attention reads.

    Adjacent pairs (y[2i], y[2i+1]) rotate together, the layout llama.cpp's llama RoPE uses, so the
    fine stack exports to GGUF without permuting q/k. Each pair is one complex number, so the
    rotation is one complex multiply (measured 57x faster than real-valued cos/sin arithmetic on a
    training batch).
    """
    n = y.shape[0] // R
    pairs = torch.view_as_complex(y.view(R, n, heads, -1, 2))  # (R, n, heads, hd/2)
    return heads_first(torch.view_as_real(pairs * rotation), R, n, heads)


def heads_first(y: torch.Tensor, R: int, n: int, heads: int) -> torch.Tensor:
    """n tokens of R rows with their heads side by side (any view that splits into (R, n, heads, hd))
    as (R, heads, n, hd), the layout attention reads; for one token a view alone (no transpose:
    an operator less per layer and decoded byte)."""
    if n == 1:
        return y.view(R, heads, 1, -1)
    return y.view(R, n, heads, -1).transpose(1, 2)
