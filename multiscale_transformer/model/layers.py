"""Small building blocks: RMSNorm, SwiGLU feed-forward, rotary position embedding."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


# Inference on a few rows (decoding) is bound by reading weights from memory, and how fast depends
# on their layout. On this project's 2-core EPYC (`python bench/matvec_layout.py`), one row times a
# (1376, 256) weight streams at 8 GB/s in nn.Linear's (out, in) layout but 18 GB/s stored (in, out):
# the kernel runs along contiguous rows and 256 floats are a short row. Square weights gain nothing
# and (out < in) ones lose, so only linears that read the same input are packed, into one
# (in, sum of outs) copy made once per weight version: q/k/v, the SwiGLU's w1/w3, the upsampling.
FEW_ROWS = 16


def project(x: torch.Tensor, *linears: nn.Linear) -> tuple[torch.Tensor, ...]:
    """x through each of `linears` (all reading x), as one packed multiply for few-row inference."""
    packed = None if torch.is_grad_enabled() or x.shape[:-1].numel() > FEW_ROWS else _packed(linears)
    if packed is None:  # training, prefill, or a swapped-in (e.g. quantized) layer
        return tuple(m(x) for m in linears)
    if packed.bias is None:
        y = x @ packed.weight
    else:
        y = torch.addmm(packed.bias, x.flatten(0, -2), packed.weight).unflatten(0, x.shape[:-1])
    return torch.split_with_sizes(y, packed.sizes, -1)


class _Packed(NamedTuple):
    linears: tuple[nn.Linear, ...]
    key: list[tuple[int, int]]  # each weight's (version, data pointer) when packed
    weight: torch.Tensor  # (in, sum of outs)
    bias: torch.Tensor | None
    sizes: list[int]


def _key(linears: tuple[nn.Linear, ...]) -> list[tuple[int, int]]:
    return [(w._version, w.data_ptr()) for w in (m.weight for m in linears)]


def _packed(linears: tuple[nn.Linear, ...]) -> _Packed | None:
    """The (in, sum of outs) copy of the linears' weights, cached on the first one; remade when any
    weight changes (in-place updates bump `_version`; `.to()` moves data). None when one of them is
    not a plain nn.Linear. Decoding calls this for every layer of every byte, so the check that the
    copy is current is kept to one comparison of a short list."""
    cached = linears[0].__dict__.get("_packed_weights")
    if cached is not None and cached.linears == linears and cached.key == _key(linears):
        return cached
    if not all(type(m) is nn.Linear for m in linears):
        return None
    weight = torch.cat([m.weight.detach() for m in linears]).t().contiguous()
    bias = None if linears[0].bias is None else torch.cat([m.bias.detach() for m in linears])
    cached = _Packed(linears, _key(linears), weight, bias, [m.out_features for m in linears])
    linears[0].__dict__["_packed_weights"] = cached  # plain attribute: not a parameter, not in state_dict
    return cached


def drop_packed(model: nn.Module) -> None:
    """Forget every packed copy (a decoder starts from the weights as they are now; frees memory)."""
    for module in model.modules():
        if hasattr(module, "_packed_weights"):
            del module._packed_weights


class SwiGLU(nn.Module):
    """FFN(x) = W2 (W1 x * SiLU(W3 x)), the AXL feed-forward (W1 "up", W3 "gate" in llama.cpp terms)."""

    def __init__(self, dim: int, hidden: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=bias)
        self.w3 = nn.Linear(dim, hidden, bias=bias)
        self.w2 = nn.Linear(hidden, dim, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, gate = project(x, self.w1, self.w3)
        y = self.w2(up * F.silu(gate))
        return F.dropout(y, self.dropout, True) if self.training and self.dropout else y


def rope_tables(head_dim: int, max_pos: int, theta: float) -> torch.Tensor:
    """Unit complex rotations e^(i * pos * freq), shape (max_pos, head_dim // 2), complex64."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv_freq)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x[2i], x[2i+1]) by position-dependent angles.

    Adjacent pairs (not rotate-half) is the layout llama.cpp's llama RoPE uses, so the fine
    stack exports to GGUF without permuting q/k. Each pair is one complex number, so the rotation
    is one complex multiply (measured 57x faster than real-valued cos/sin arithmetic on a training
    batch). x: (B, H, T, hd); rotation: (T, hd/2) or, for per-row positions, (B, 1, T, hd/2).
    """
    # view, not unflatten: the same split of the last dimension without unflatten's Python wrapper,
    # which decoding would pay for twice per layer and byte.
    pairs = torch.view_as_complex(x.float().view(*x.shape[:-1], -1, 2).contiguous())  # (B, H, T, hd/2)
    return torch.view_as_real(pairs * rotation).flatten(-2).type_as(x)
