"""`axl eval --repo DIR`: every .py file of a repository scored as an editor sees it, with the rest of
the repository available and the file itself never visible ahead of the cursor.

Modes (each scores every byte of every file exactly once, as evaluation/bpb.py does):
  alone      the file by itself: bpb.py's sliding window (context T, stride T/2), today's `axl eval`.
  retrieval  a share of the context (`budget`, half by default) holds chunks of the repository's OTHER
             files, ranked by BM25 from the bytes before the window's first scored byte (retrieval.py);
             the rest is a sliding window over the file's own bytes (stride half of it). Layout:
             `chunk EOS chunk EOS ... <the file's window>`, the best chunk last; only the file's bytes count.
  dynamic    dynamic evaluation (Krause et al. 2018): the files in sorted path order, one window at a time;
             after a window is scored, one optimizer step on the loss of the bytes it just scored, so the
             model learns the repository as it reads it. No step ever sees a byte before it was scored.
             A model that reads any length (ModelConfig.rolling: every attention windowed) reads each
             file once through its caches instead, `step_bytes` at a time, one optimizer step after each
             piece on its bytes with `step_context` bytes before them (`score_rolling`): a step every 256
             bytes where a window of 8,192 would step every 4,096.
  match      alone's bits mixed with a match model of the repository read so far (match.py): the
             byte that followed the last earlier occurrence of the bytes just read.
  dynamic+match  dynamic's bits mixed the same way.
  both       retrieval's windows, with dynamic's steps. A step reads only the file's own bytes of the window
             (a second, shorter forward pass): a step with the chunks in its context would let the weights
             absorb chunks of files not yet read, among them later bytes of a file read further on.
Each repository starts from the given weights (dynamic modes adapt a copy).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from multiscale_transformer.errors import UserError
from multiscale_transformer.evaluation.bpb import sliding_windows
from multiscale_transformer.evaluation.match import Matches, find_matches, mix
from multiscale_transformer.evaluation.retrieval import (
    QUERY_BYTES,
    Chunk,
    LeaveOneOutIndex,
    pack_chunks,
    split_chunks,
)
from multiscale_transformer.model.cache import ModelCache
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.model.vocab import EOS_ID
from multiscale_transformer.training.data import Document

MODES = ("alone", "retrieval", "dynamic", "both", "match", "dynamic+match")
MATCH_MODES = {"match": "alone", "dynamic+match": "dynamic"}  # -> the mode whose bits are mixed
RETRIEVAL_MODES = frozenset({"retrieval", "both"})
DYNAMIC_MODES = frozenset({"dynamic", "both"})
OPTIMIZERS = ("sgd", "adam")

# Python source averages 30-40 bytes a line; a chunk should fit the budget about whole.
BYTES_PER_LINE = 48
CHUNK_LINES = 32  # llama.vim's chunk size


@dataclass(frozen=True)
class RepoOptions:
    stride: int | None = None  # own-byte stride; default half the context the file's own bytes get
    budget: float = 0.5  # share of the context for other files' chunks (retrieval modes)
    chunk_lines: int | None = None  # default: 32, fewer where the budget would not hold one
    optimizer: str = "adam"  # dynamic modes
    lr: float = 3e-4
    batch_size: int = 16  # windows per forward pass in the static modes
    step_bytes: int = 256  # rolling models, mode dynamic: bytes scored between two steps
    step_context: int = 1024  # ... and the bytes a step reads, the scored ones last

    def own_context(self, context: int, mode: str) -> int:
        return context - self.budget_ids(context) if mode in RETRIEVAL_MODES else context

    def budget_ids(self, context: int) -> int:
        return int(context * self.budget)

    def lines(self, context: int) -> int:
        return self.chunk_lines or max(1, min(CHUNK_LINES, self.budget_ids(context) // BYTES_PER_LINE))

    def check(self, context: int, modes: Sequence[str]) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"the optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for mode in modes:
            if mode not in MODES:
                raise UserError(f"unknown mode {mode!r}: choose from {', '.join(MODES)}")
            own = self.own_context(context, mode)
            if mode in RETRIEVAL_MODES and min(self.budget_ids(context), own) < 2:
                raise UserError(f"--retrieval-budget {self.budget} leaves no room in a {context}-byte context")
            if MATCH_MODES.get(mode, mode) == "dynamic" and not 1 <= self.step_bytes <= self.step_context:
                raise UserError(
                    f"--dynamic-step ({self.step_bytes}) must be at least 1 and at most --dynamic-context "
                    f"({self.step_context})"
                )
            if self.stride is not None and not 1 <= self.stride <= own:
                raise UserError(
                    f"--stride must be in 1..{own} (the file's own context in mode {mode}), got {self.stride}"
                )


@dataclass(frozen=True)
class Prepared:
    """One window ready to run: inputs ids[:-1] predict ids[1:]; predictions from `score_at` on are
    scored, and they are the file's bytes first_byte, first_byte + 1, ... ."""

    file: int
    ids: torch.Tensor  # (L + 1,) int64
    score_at: int
    first_byte: int
    chunks: tuple[Chunk, ...] = ()
    own_from: int = 0  # ids[own_from:] are the file's own: what a dynamic step may read

    def own(self) -> Prepared:
        """The window without its chunks (what a dynamic step trains on)."""
        cut = self.own_from
        return Prepared(self.file, self.ids[cut:], self.score_at - cut, self.first_byte)

    @property
    def n_scored(self) -> int:
        return len(self.ids) - 1 - self.score_at


@dataclass
class ModeScore:
    mode: str
    nats: list[np.ndarray]  # per file, the negative log-likelihood of each byte
    cpu_seconds: float

    @property
    def bits_per_byte(self) -> float:
        n = sum(len(a) for a in self.nats)
        return float(sum(a.sum() for a in self.nats)) / n / math.log(2)

    def file_bits_per_byte(self, i: int) -> float:
        return float(self.nats[i].sum()) / len(self.nats[i]) / math.log(2)


@dataclass
class RepoResult:
    name: str
    files: list[Document]
    modes: dict[str, ModeScore] = field(default_factory=dict)
    compressors: dict[str, float] = field(default_factory=dict)  # label -> bits per byte

    @property
    def bytes(self) -> int:
        return sum(len(d.data) for d in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bytes": self.bytes,
            "modes": {
                m: {"bits_per_byte": s.bits_per_byte, "cpu_seconds": s.cpu_seconds} for m, s in self.modes.items()
            },
            "compressors": self.compressors,
            "per_file": [
                {
                    "name": d.name,
                    "bytes": len(d.data),
                    "bits_per_byte": {m: s.file_bits_per_byte(i) for m, s in self.modes.items()},
                }
                for i, d in enumerate(self.files)
            ],
        }


def evaluate_repository(
    model: MultiScaleTransformer, docs: Sequence[Document], modes: Sequence[str], options: RepoOptions
) -> dict[str, ModeScore]:
    """Score the repository's documents (in the order given) in each mode; CPU seconds per mode (a
    match mode's include those of the mode it mixes, scored once when both are asked for)."""
    context = model.config.max_seq_len
    options.check(context, modes)
    scored: dict[str, ModeScore] = {}
    files = [d.data for d in docs]
    found: list[tuple[list[Matches], float]] = []  # the match model's predictions and their CPU seconds

    def score(mode: str) -> ModeScore:
        if mode in scored:
            return scored[mode]
        if mode in MATCH_MODES:
            base = score(MATCH_MODES[mode])
            if not found:  # the same for every match mode: found once, its time counted in each
                start = time.process_time()
                found.append((find_matches(files), time.process_time() - start))
            matches, seconds = found[0]
            start = time.process_time()
            nats = mix(base.nats, files, matches)
            scored[mode] = ModeScore(mode, nats, base.cpu_seconds + seconds + time.process_time() - start)
            return scored[mode]
        start = time.process_time()
        windows = plan_windows(docs, context, mode, options)
        if mode == "dynamic" and model.config.rolling:
            nats = score_rolling(copy.deepcopy(model), docs, options)
        elif mode in DYNAMIC_MODES:
            nats = score_dynamic(copy.deepcopy(model), windows, docs, options)
        else:
            nats = score_static(model, windows, docs, context, options.batch_size)
        scored[mode] = ModeScore(mode, nats, time.process_time() - start)
        return scored[mode]

    return {mode: score(mode) for mode in modes}


def plan_windows(docs: Sequence[Document], context: int, mode: str, options: RepoOptions) -> Iterator[Prepared]:
    """The windows of every file in order; in retrieval modes each is preceded by the chunks that the
    bytes before its first scored byte retrieve (from an index without the file's own chunks)."""
    own = options.own_context(context, mode)
    stride = options.stride or max(1, own // 2)
    chunks = split_chunks(docs, options.lines(context)) if mode in RETRIEVAL_MODES else []
    for i, doc in enumerate(docs):
        seq = _ids(doc.data)
        index = LeaveOneOutIndex(chunks, i) if mode in RETRIEVAL_MODES else None
        for w in sliding_windows(len(doc.data), own, stride):
            own_ids = seq[w.start : w.end + 1]  # (w.end - w.start + 1,)
            chosen: list[Chunk] = []
            if index is not None:
                # The cursor is byte w.score_from: the query reads only the bytes before it.
                query = doc.data[max(0, w.score_from - QUERY_BYTES) : w.score_from]
                chosen = pack_chunks([c for c, _ in index.search(query)], options.budget_ids(context))
            prefix = [t for c in chosen for t in (*c.data, EOS_ID)]
            ids = torch.cat([torch.tensor(prefix, dtype=torch.long), own_ids])
            yield Prepared(i, ids, len(prefix) + w.score_from - w.start, w.score_from, tuple(chosen), len(prefix))


@torch.no_grad()
def score_static(
    model: MultiScaleTransformer, windows: Iterator[Prepared], docs: Sequence[Document], context: int, batch_size: int
) -> list[np.ndarray]:
    """Fixed weights: windows batched, each right-padded to the context (the model is causal, so padding
    after a window changes none of its predictions, and one shape keeps every batch alike)."""
    model.eval()
    nats = _empty(docs)
    while batch := list(itertools.islice(windows, batch_size)):
        ids = torch.full((len(batch), context + 1), EOS_ID, dtype=torch.long)  # (B, T + 1)
        for row, p in enumerate(batch):
            ids[row, : len(p.ids)] = p.ids
        nll = F.cross_entropy(model(ids[:, :-1]).float().transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T)
        for row, p in enumerate(batch):
            _record(nats, p, nll[row, p.score_at : len(p.ids) - 1])
    return _checked(nats)


def score_dynamic(
    model: MultiScaleTransformer, windows: Iterator[Prepared], docs: Sequence[Document], options: RepoOptions
) -> list[np.ndarray]:
    """Windows one at a time in order; each is scored, then the model takes one step on the loss of the
    bytes just scored, reading only the file's own bytes (without chunks this is the same forward pass:
    the bits are recorded before the weights move)."""
    opt = _adapting(model, options)
    nats = _empty(docs)
    for p in windows:
        with torch.enable_grad():
            if p.own_from:
                with torch.no_grad():
                    _record(nats, p, _nll(model, p))
                loss = _nll(model, p.own()).mean()
            else:
                nll = _nll(model, p)
                _record(nats, p, nll.detach())
                loss = nll.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
    return _checked(nats)


def score_rolling(model: MultiScaleTransformer, docs: Sequence[Document], options: RepoOptions) -> list[np.ndarray]:
    """Dynamic evaluation of a model that reads any length: each file once, through a fresh cache (the
    file alone, as in mode alone), `step_bytes` at a time. Each piece is scored with the weights as they
    are, then the model takes one step on the loss of those bytes, read with up to `step_context` bytes
    before them. Keys and values already in the cache stay those of the weights that computed them
    (recomputing them after every step would cost the whole context again): later bytes read them as
    they were, still only bytes before themselves."""
    opt = _adapting(model, options)
    nats = _empty(docs)
    device = next(model.parameters()).device
    for i, doc in enumerate(docs):
        seq = _ids(doc.data).to(device)  # EOS, then the file: inputs seq[t] predict seq[t + 1]
        cache = ModelCache(model.config, 1, device)
        for a in range(0, len(doc.data), options.step_bytes):
            b = min(a + options.step_bytes, len(doc.data))
            with torch.no_grad():
                logits = model.head(model.hidden(seq[None, a:b], cache.at([0], [a]))).float()[0]
                nats[i][a:b] = F.cross_entropy(logits, seq[a + 1 : b + 1], reduction="none").double().cpu().numpy()
            lo = max(0, b - options.step_context)
            logits = model(seq[None, lo:b]).float()[0, a - lo :]
            loss = F.cross_entropy(logits, seq[a + 1 : b + 1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return _checked(nats)


def _adapting(model: MultiScaleTransformer, options: RepoOptions) -> torch.optim.Optimizer:
    """The dynamic modes' optimizer over `model` (a copy), put in eval mode: no dropout, the bits must be
    those of the weights as they are."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    if options.optimizer == "adam":
        return torch.optim.Adam(params, lr=options.lr)
    return torch.optim.SGD(params, lr=options.lr)


def _nll(model: MultiScaleTransformer, p: Prepared) -> torch.Tensor:
    """The negative log-likelihood of the window's scored bytes, (n,), with the grad mode of the caller."""
    ids = p.ids[None]  # (1, L + 1)
    logits = model(ids[:, :-1]).float()  # (1, L, V)
    return F.cross_entropy(logits[0, p.score_at :], ids[0, p.score_at + 1 :], reduction="none")


def _record(nats: list[np.ndarray], p: Prepared, nll: torch.Tensor) -> None:
    part = nats[p.file][p.first_byte : p.first_byte + p.n_scored]
    assert np.isnan(part).all(), "a byte was scored twice"
    part[:] = nll.double().numpy()


def _empty(docs: Sequence[Document]) -> list[np.ndarray]:
    return [np.full(len(d.data), np.nan) for d in docs]


def _checked(nats: list[np.ndarray]) -> list[np.ndarray]:
    # The bookkeeping invariant the evaluation rests on, as in bpb.py: every byte scored, exactly once.
    assert all(not np.isnan(a).any() for a in nats), "a byte was not scored"
    return nats


def _ids(data: bytes) -> torch.Tensor:
    """`EOS b0 .. b(n-1)` as int64: what bpb.py scores, the file start right after an EOS as in training."""
    return torch.cat([torch.tensor([EOS_ID]), torch.frombuffer(bytearray(data), dtype=torch.uint8).long()])
