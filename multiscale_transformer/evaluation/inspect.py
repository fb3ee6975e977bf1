"""Per-byte inspection of a text: the model's surprise at every byte, its top alternatives, and how
the fusion gate weighed the scales there. What the playground's Inspect view and `POST /v1/inspect` show.

The text is read exactly as `axl eval` reads a file (evaluation/bpb.py): `EOS b0 .. b(n-1)`, scored by
the same sliding windows, so the total here is `axl eval`'s bits per byte for that text as one file.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from multiscale_transformer.evaluation.baselines import COMPRESSORS
from multiscale_transformer.evaluation.bpb import Window, sliding_windows
from multiscale_transformer.model.model import MultiScaleTransformer, ScaleTrace
from multiscale_transformer.model.vocab import EOS_ID

LOG2 = math.log(2)


@dataclass(frozen=True)
class ByteReport:
    byte: int
    logprob: float  # natural log of p(byte | everything before it)
    top: list[tuple[int, float]]  # the most likely ids there, with their logprobs, best first
    gates: list[float]  # the fusion's weight of each scale (finest first) at the position predicting it
    shares: list[float]  # each scale's share of what was written into that position's stream (`scale_shares`)


@dataclass(frozen=True)
class Inspection:
    bytes: list[ByteReport]
    scales: list[int]  # the downsample factor of each gate entry
    context: int
    stride: int

    @property
    def bits_per_byte(self) -> float:
        return -sum(b.logprob for b in self.bytes) / LOG2 / len(self.bytes) if self.bytes else 0.0


def inspect_bytes(model: MultiScaleTransformer, data: bytes, top: int = 5, stride: int | None = None) -> Inspection:
    """Every byte of `data` scored once (see the module docstring); top: alternatives kept per byte."""
    T = model.config.max_seq_len
    stride = stride or default_stride(T)
    ids = text_ids(data)
    reports = [r for w in sliding_windows(len(data), T, stride) for r in inspect_window(model, ids, w, top)]
    return Inspection(reports, list(model.config.downsample_factors), T, stride)


def default_stride(context: int) -> int:
    return max(1, context // 2)


def text_ids(data: bytes) -> torch.Tensor:
    """`EOS b0 .. b(n-1)`: the text read as one file."""
    return torch.tensor([EOS_ID, *data], dtype=torch.long)


def positions_computed(n_bytes: int, context: int, stride: int) -> int:
    """The forward-pass positions an inspection costs: the sum of its windows' lengths."""
    return sum(w.end - w.start for w in sliding_windows(n_bytes, context, stride))


@torch.no_grad()
def inspect_window(model: MultiScaleTransformer, ids: torch.Tensor, w: Window, top: int) -> list[ByteReport]:
    """The reports of the bytes window `w` scores (ids: `text_ids`); one forward pass. The server runs
    one window at a time between decoding steps, so an inspection delays a stream like a prefill does."""
    with recording_cross_attention(model) as cross:
        trace = model.forward_with_scales(ids[None, w.start : w.end])
    skip = w.score_from - w.start
    logprobs = torch.log_softmax(trace.logits[0].float(), dim=-1)[skip:]  # (scored, V)
    gate_rows = trace.gates[0, skip:].float().tolist()
    share_rows = scale_shares(model, trace, cross)[0, skip:].tolist()
    targets = ids[w.score_from + 1 : w.end + 1]
    chosen = logprobs.gather(1, targets[:, None])[:, 0].tolist()
    best = logprobs.topk(min(top, logprobs.shape[-1]), dim=-1)
    values, indices = best.values.tolist(), best.indices.tolist()  # (scored, k) each, k possibly 0
    rows = zip(targets.tolist(), chosen, gate_rows, share_rows, strict=True)
    return [
        ByteReport(byte, logprob, list(zip(indices[t], values[t], strict=True)), gate, share)
        for t, (byte, logprob, gate, share) in enumerate(rows)
    ]


@contextmanager
def recording_cross_attention(model: MultiScaleTransformer) -> Iterator[dict[tuple[int, int], list[torch.Tensor]]]:
    """While open, what every cross-scale block writes into its target's stream (its output minus
    its input, attention and FFN: (B, n_target, d)) is kept under its (source, target) pair, through
    forward hooks removed on exit. The server runs inspections in the engine's thread between
    steps, so no decoding step passes the hooks meanwhile."""
    records: dict[tuple[int, int], list[torch.Tensor]] = defaultdict(list)
    handles = []
    for layer in model.cross:
        for pair, block in zip(model.pairs, layer, strict=True):

            def keep(_: Any, args: tuple[Any, ...], out: torch.Tensor, pair: tuple[int, int] = pair) -> None:
                records[pair].append(out - args[0])

            handles.append(block.register_forward_hook(keep))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def scale_shares(
    model: MultiScaleTransformer, trace: ScaleTrace, cross: dict[tuple[int, int], list[torch.Tensor]]
) -> torch.Tensor:
    """Each scale's share (B, T, n_scales), summing to 1, of what was written into each byte position's
    stream before the head read it, by norm: the finest scale its stack's output; a coarser scale its
    cross blocks' writes into the bytes (cross pairs whose target is the finest scale) plus what the
    fusion gate mixes in of it (gate x the norm of its upsampled state).

    The fusion gate alone can say nothing: in a layout where the coarse scales reach the bytes through
    cross-attention (`axl train`'s from 2 layers per scale, the bundled model's), the trained gate
    puts all its weight on the bytes, while the cross-attention from the 2x scale alone added to each
    byte's stream about 40% of the fine stack's norm (measured on the bundled model)."""
    n = model.config.n_scales
    parts = [trace.fine.norm(dim=-1)]  # (B, T)
    for s in range(1, n):
        into_bytes = sum((out.norm(dim=-1) for (src, dst), out in _pairs(cross) if src == s and dst == 0), 0.0)
        parts.append(into_bytes + trace.gates[..., s] * trace.upsampled[s].norm(dim=-1))
    total = torch.stack([torch.as_tensor(p).expand_as(parts[0]) for p in parts], dim=-1).float()  # (B, T, n)
    return total / total.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def _pairs(cross: dict[tuple[int, int], list[torch.Tensor]]) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
    return ((pair, out) for pair, outs in cross.items() for out in outs)


def gzip_bits_per_byte(data: bytes) -> float:
    """`gzip -9` on the text alone, as `axl eval` reports it: the compressor a model should beat."""
    return 8 * len(COMPRESSORS["gzip -9"](data)) / len(data) if data else 0.0
