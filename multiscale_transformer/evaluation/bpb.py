"""Bits per byte over held-out files: every byte scored exactly once by a sliding window.

Each file is scored on its own as the id sequence `EOS b0 b1 ... b(n-1)`: training reads the corpus as
`... doc EOS doc EOS ...`, so the first byte of a file is predicted right after an EOS, exactly as the
model saw file starts in training; the EOS itself is context, never a scored target. Only the n bytes
are scored (the closing EOS is not a byte), so bits per byte compare directly with a compressor's
output size on the same bytes.

Sliding window (context T = max_seq_len, `stride` S in 1..T): the first window scores the first
min(T, n) bytes; each later window ends S bytes further on, spans the T ids before its end and scores
only its last S (or fewer, at the file's end) predictions. Every byte is therefore scored exactly once,
and every byte after the first T of a file is predicted from at least T - S bytes of its own file.
The default S = T / 2 gives every such byte at least S = T / 2 bytes of context; S = T is the fastest
(no overlap) and leaves bytes just past a window boundary with little context.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from multiscale_transformer.errors import UserError
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.model.vocab import EOS_ID
from multiscale_transformer.training.data import Document, SkipStats, collect_documents, split_documents

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Window:
    """Inputs ids[start:end] predict targets ids[start+1 : end+1]; targets ids[score_from+1 : end+1] count."""

    start: int
    end: int
    score_from: int


def sliding_windows(n_bytes: int, context: int, stride: int) -> Iterator[Window]:
    """The windows that score the n bytes of `EOS b0 .. b(n-1)` once each (see the module docstring)."""
    if not 1 <= stride <= context:
        raise UserError(f"--stride must be in 1..{context} (the model's context), got {stride}")
    done = 0  # targets 1..done are scored
    while done < n_bytes:
        end = min(done + (context if done == 0 else stride), n_bytes)
        yield Window(max(0, end - context), end, done)
        done = end


# How far into its file a byte sits, in bytes: the bands of EvalResult.by_position, which show what
# context is worth (a byte past 4 KB can use whole functions and imports before it, if the model reads them).
POSITION_BANDS = ((0, 256), (256, 1024), (1024, 4096), (4096, None))


@dataclass(frozen=True)
class FileScore:
    name: str
    bytes: int
    nats: float  # summed negative log-likelihood of the file's bytes
    band_nats: tuple[float, ...] = ()  # the same, per POSITION_BANDS

    @property
    def bits_per_byte(self) -> float:
        return self.nats / self.bytes / math.log(2)


def band_sizes(n_bytes: int) -> list[int]:
    """How many of a file's n bytes fall in each of POSITION_BANDS."""
    return [max(0, min(n_bytes, hi if hi is not None else n_bytes) - lo) for lo, hi in POSITION_BANDS]


@dataclass(frozen=True)
class EvalResult:
    files: list[FileScore]
    context: int
    stride: int
    fine_only: bool

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def loss(self) -> float:
        """Mean negative log-likelihood per byte, in nats (what training reports as loss)."""
        return sum(f.nats for f in self.files) / self.bytes

    @property
    def bits_per_byte(self) -> float:
        return self.loss / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def by_position(self) -> list[dict[str, Any]]:
        """Bits per byte of the bytes at each POSITION_BANDS distance into their files (None: no bytes there)."""
        out = []
        for b, (lo, hi) in enumerate(POSITION_BANDS):
            n = sum(band_sizes(f.bytes)[b] for f in self.files)
            nats = sum(f.band_nats[b] for f in self.files if f.band_nats)
            name = f"{lo}-{hi}" if hi is not None else f"{lo}+"
            out.append({"band": name, "bytes": n, "bits_per_byte": nats / n / math.log(2) if n else None})
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "bits_per_byte": self.bits_per_byte,
            "perplexity": self.perplexity,
            "loss": self.loss,
            "bytes": self.bytes,
            "files": len(self.files),
            "context": self.context,
            "stride": self.stride,
            "fine_only": self.fine_only,
            "by_position": self.by_position(),
            "per_file": [{"name": f.name, "bytes": f.bytes, "bits_per_byte": f.bits_per_byte} for f in self.files],
        }


def validation_documents(
    paths: list[Path] | None, glob: str = "*.py", val_fraction: float = 0.05, all_files: bool = False
) -> list[Document]:
    """The held-out files: the validation split of `paths` (default: the stdlib), computed by the very
    functions `axl train` uses, so the two can never disagree; `all_files` scores every file instead."""
    return held_out_documents(paths, glob, val_fraction, all_files)[0]


def held_out_documents(
    paths: list[Path] | None, glob: str = "*.py", val_fraction: float = 0.05, all_files: bool = False
) -> tuple[list[Document], SkipStats]:
    """`validation_documents` and the files left out of the corpus, counted per reason."""
    docs, skipped = collect_documents(paths, glob)
    if not all_files:
        _, docs = split_documents(docs, val_fraction)
    if not docs:
        where = ", ".join(map(str, paths)) if paths else "the standard library"
        # Name the glob only where it applied: files given directly are read whatever their names.
        matching = f" matching {glob!r}" if not paths or any(p.is_dir() for p in paths) else ""
        why = f" ({skipped.summary()})" if skipped.total else ""
        raise UserError(f"no usable files{matching} to evaluate under {where}{why}")
    return docs, skipped


@torch.no_grad()
def evaluate_documents(
    model: MultiScaleTransformer,
    docs: Sequence[Document],
    stride: int | None = None,
    fine_only: bool = False,
    batch_size: int = 16,
    progress: bool = False,
) -> EvalResult:
    """Score every byte of every document once with the model (or its fine path alone)."""
    model.eval()
    forward: Forward = (lambda x: model(x, fine_only=True)) if fine_only else model
    return score_documents(forward, model.config.max_seq_len, docs, stride, batch_size, progress, fine_only)


@torch.no_grad()
def score_documents(
    forward: Forward,
    context: int,
    docs: Sequence[Document],
    stride: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
    fine_only: bool = False,
) -> EvalResult:
    """The protocol itself, for any `forward` (B, T) ids -> (B, T, V) logits of context `context`: our
    model, or llama.cpp running a GGUF export (export/runtime.py), so both are measured the same way.
    Windows of equal length are batched across files."""
    T = context
    stride = stride or max(1, T // 2)
    seqs = [_ids(d.data) for d in docs]
    by_length: dict[int, list[tuple[int, Window]]] = defaultdict(list)
    for i, d in enumerate(docs):
        for w in sliding_windows(len(d.data), T, stride):
            by_length[w.end - w.start].append((i, w))
    nats = [0.0] * len(docs)
    bands = [[0.0] * len(POSITION_BANDS) for _ in docs]
    scored = [0] * len(docs)
    bar = _progress(sum(len(v) for v in by_length.values()), progress)
    for length in sorted(by_length, reverse=True):
        group = by_length[length]
        for b in range(0, len(group), batch_size):
            chunk = group[b : b + batch_size]
            ids = torch.stack([seqs[i][w.start : w.end + 1] for i, w in chunk]).long()  # (B, length + 1)
            logits = forward(ids[:, :-1]).float()  # (B, length, V)
            nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, length)
            for row, (i, w) in enumerate(chunk):
                part = nll[row, w.score_from - w.start :].double()  # bytes score_from .. end-1
                nats[i] += float(part.sum())
                scored[i] += part.numel()
                for b, (lo, hi) in enumerate(POSITION_BANDS):
                    a, z = max(lo, w.score_from), min(w.end if hi is None else hi, w.end)
                    if z > a:
                        bands[i][b] += float(part[a - w.score_from : z - w.score_from].sum())
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    # The bookkeeping invariant the whole evaluation rests on; cheap enough to check on every run.
    assert scored == [len(d.data) for d in docs], "a byte was scored twice or not at all"
    files = [FileScore(d.name, len(d.data), n, tuple(b)) for d, n, b in zip(docs, nats, bands, strict=True)]
    return EvalResult(files, T, stride, fine_only)


def _ids(data: bytes) -> torch.Tensor:
    """`EOS b0 .. b(n-1)` as int16 (EOS = 257 does not fit a byte): a quarter of int64's memory."""
    body = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int16)
    return torch.cat([torch.tensor([EOS_ID], dtype=torch.int16), body])


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, unit="window", desc="scoring", dynamic_ncols=True, file=sys.stderr)
