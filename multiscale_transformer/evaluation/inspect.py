"""Per-byte inspection of a text: the model's surprise at every byte, its top alternatives, and how
the fusion gate weighed the scales there. What the playground's Inspect view and `POST /v1/inspect` show.

The text is read exactly as `axl eval` reads a file (evaluation/bpb.py): `EOS b0 .. b(n-1)`, scored by
the same sliding windows, so the total here is `axl eval`'s bits per byte for that text as one file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from multiscale_transformer.evaluation.baselines import COMPRESSORS
from multiscale_transformer.evaluation.bpb import Window, sliding_windows
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.model.vocab import EOS_ID

LOG2 = math.log(2)


@dataclass(frozen=True)
class ByteReport:
    byte: int
    logprob: float  # natural log of p(byte | everything before it)
    top: list[tuple[int, float]]  # the most likely ids there, with their logprobs, best first
    gates: list[float]  # the fusion's weight of each scale (finest first) at the position predicting it


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
    logits, gates = model.forward_with_gates(ids[None, w.start : w.end])
    logprobs = torch.log_softmax(logits[0].float(), dim=-1)[w.score_from - w.start :]  # (scored, V)
    gate_rows = gates[0, w.score_from - w.start :].float().tolist()
    targets = ids[w.score_from + 1 : w.end + 1]
    chosen = logprobs.gather(1, targets[:, None])[:, 0].tolist()
    best = logprobs.topk(min(top, logprobs.shape[-1]), dim=-1)
    values, indices = best.values.tolist(), best.indices.tolist()  # (scored, k) each, k possibly 0
    return [
        ByteReport(byte, logprob, list(zip(indices[t], values[t], strict=True)), gate)
        for t, (byte, logprob, gate) in enumerate(zip(targets.tolist(), chosen, gate_rows, strict=True))
    ]


def gzip_bits_per_byte(data: bytes) -> float:
    """`gzip -9` on the text alone, as `axl eval` reports it: the compressor a model should beat."""
    return 8 * len(COMPRESSORS["gzip -9"](data)) / len(data) if data else 0.0
