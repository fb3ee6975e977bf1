"""Fill-in-the-middle evaluation (`axl eval --fim`): hide spans of held-out files and ask the model back.

Holes are single lines (the text of a line after its indentation: the editor's cursor at the
start of a line) and multi-line blocks (2-5 whole lines from the first one's indentation on). For
each hole we report the bits per byte of the hidden middle given prefix and suffix (the FIM
prompt of generation/fim.py, exactly what the server sends), given the same prefix alone (what the
suffix adds), and given as much prefix as the context holds (plain left-to-right reading, more
prefix than the FIM prompt keeps), and the exact-match rate of greedy single-line infilling with
the suffix and with the long prefix alone (both compare the first line written). The infilling with
the suffix runs as an editor's request is served: the stops of every infilling (generation/fim.py:
the suffix's next line, a repeated line) and llama.cpp's n_indent at the cursor line's indentation,
capped at the room an infilling has; once greedy, once with the sampler chain that llama.vscode and
llama.vim ask for (top-k 40, top-p 0.99 and llama.cpp's infill sampler, then the most likely byte
left: `EDITOR`). For each, the report says how many single-line infills ended by themselves before
the cap (EOS or a stop rule), how many by EOS alone, how long they ran and how many first lines
were exact.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from multiscale_transformer.generation import fim
from multiscale_transformer.generation.fim import Infill
from multiscale_transformer.generation.generate import TextStream
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.vocab import EOS_ID

if TYPE_CHECKING:
    from multiscale_transformer.model.model import MultiScaleTransformer
    from multiscale_transformer.training.data import Document

GREEDY = SamplingParams(0.0, None, None, 1.0)
# llama.vscode's and llama.vim's `"samplers": ["top_k", "top_p", "infill"]` with top_k 40, top_p 0.99,
# made deterministic: the most likely byte among those the chain leaves.
EDITOR = SamplingParams(0.0, 40, 0.99, 1.0, infill=True)
ENDED_BY = ("eos", "word", "indent", "repeat")  # RowState.stopped_by values that are not the cap
KINDS = ("line", "block")


@dataclass(frozen=True)
class Hole:
    name: str
    kind: str  # "line" or "block"
    prefix: bytes
    middle: bytes
    suffix: bytes


def max_middle(kind: str, window: int) -> int:
    """Longest hidden span for a context of `window` bytes: a line must fit the room an infilling
    leaves to generate (a quarter of the context, generation/fim.py); a block up to half the context."""
    return window // 4 - 4 if kind == "line" else window // 2


def make_holes(docs: Sequence[Document], per_kind: int, window: int, seed: int = 0) -> list[Hole]:
    """`per_kind` holes of each kind, from lines chosen at random (seeded) across the documents."""
    rng = random.Random(seed)
    holes: list[Hole] = []
    for kind in KINDS:
        candidates = [(d, i) for d in docs for i in range(len(d.data.split(b"\n")))]
        rng.shuffle(candidates)
        found = 0
        for doc, i in candidates:
            if found == per_kind:
                break
            hole = _hole(doc, i, kind, rng, max_middle(kind, window))
            if hole is not None:
                holes.append(hole)
                found += 1
    return holes


def _hole(doc: Document, i: int, kind: str, rng: random.Random, longest: int) -> Hole | None:
    lines = doc.data.split(b"\n")
    n = 1 if kind == "line" else rng.randint(2, 5)
    if i + n > len(lines) - 1:  # keep at least one line of suffix
        return None
    first = lines[i]
    indent = len(first) - len(first.lstrip(b" \t"))
    start = sum(len(line) + 1 for line in lines[:i]) + indent
    end = sum(len(line) + 1 for line in lines[: i + n]) - 1  # before the last line's newline
    middle = doc.data[start:end]
    if len(middle.strip()) < 4 or len(middle) > longest or (kind == "block" and not lines[i + n - 1].strip()):
        return None
    try:
        middle.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return Hole(doc.name, kind, doc.data[:start], middle, doc.data[end:])


@dataclass
class Infills:
    """Single-line infillings with the suffix under one sampling: sums over the holes."""

    exact: int = 0  # first line written == the hidden line
    ended: int = 0  # ended before the cap (EOS or a stop rule)
    ended_eos: int = 0  # ... by EOS
    written: int = 0  # bytes written
    stopped_by: dict[str, int] = field(default_factory=dict)  # RowState.stopped_by -> holes

    def add(self, hole: Hole, text: bytes, stopped_by: str | None) -> None:
        self.exact += text.split(b"\n")[0] == hole.middle
        self.ended += stopped_by in ENDED_BY
        self.ended_eos += stopped_by == "eos"
        self.written += len(text)
        self.stopped_by[str(stopped_by)] = self.stopped_by.get(str(stopped_by), 0) + 1

    def shares(self, n: int) -> dict[str, Any]:
        """The report's numbers over n holes."""
        return {
            "by_eos_or_stop_rule": self.ended / n,
            "by_eos": self.ended_eos / n,
            "mean_bytes": self.written / n,
            "stopped_by": {reason: count / n for reason, count in sorted(self.stopped_by.items())},
        }


@dataclass
class KindScore:
    """Sums over the holes of one kind."""

    holes: int = 0
    middle_bytes: int = 0
    fim_bits: float = 0.0
    prefix_bits: float = 0.0  # the FIM prompt's prefix, without the suffix
    long_prefix_bits: float = 0.0  # as much prefix as the context holds
    exact_prefix: int = 0
    infills: dict[str, Infills] = field(default_factory=dict)  # single lines with the suffix, by sampling

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "holes": self.holes,
            "middle_bytes": self.middle_bytes,
            "prefix_only_bits_per_byte": self.prefix_bits / max(1, self.middle_bytes),
            "long_prefix_only_bits_per_byte": self.long_prefix_bits / max(1, self.middle_bytes),
        }
        if self.fim_bits:
            out["prefix_and_suffix_bits_per_byte"] = self.fim_bits / max(1, self.middle_bytes)
        return out


@dataclass
class FimReport:
    fim_trained: bool
    kinds: dict[str, KindScore] = field(default_factory=dict)
    exact_match: dict[str, float] = field(default_factory=dict)
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "fim_trained": self.fim_trained,
            **{k: s.to_json() for k, s in self.kinds.items()},
            "single_line_exact_match": self.exact_match,
            "single_line_ended": self.ended,
        }


@torch.no_grad()
def evaluate_infilling(model: MultiScaleTransformer, holes: Sequence[Hole], exact: bool = True) -> FimReport:
    """Score every hole; FIM numbers only for a model trained with the sentinels (the others have none)."""
    model.eval()
    window = model.config.max_seq_len
    report = FimReport(model.config.fim, {k: KindScore() for k in KINDS})
    for hole in holes:
        s = report.kinds[hole.kind]
        s.holes += 1
        s.middle_bytes += len(hole.middle)
        infill = Infill(hole.prefix, hole.suffix)
        ids = fim.infill_prompt(infill, window, len(hole.middle))
        kept = fim.fit(infill, window, len(hole.middle)).prefix  # the prefix bytes the FIM prompt keeps
        same_prefix = [EOS_ID, *kept] if len(kept) == len(hole.prefix) else list(kept)
        s.prefix_bits += _bits(model, same_prefix, hole.middle)
        s.long_prefix_bits += _bits(model, _prefix_context(hole.prefix, window - len(hole.middle)), hole.middle)
        if model.config.fim:
            s.fim_bits += _bits(model, ids, hole.middle)
        if exact and hole.kind == "line":
            s.exact_prefix += _greedy_prefix_only(model, hole) == hole.middle
            if model.config.fim:
                for name, params in (("greedy", GREEDY), ("editor", EDITOR)):
                    s.infills.setdefault(name, Infills()).add(hole, *_infill(model, hole, params))
    lines = report.kinds["line"]
    if exact and lines.holes:
        n = lines.holes
        report.exact_match["prefix_only"] = lines.exact_prefix / n
        if model.config.fim:
            report.exact_match["prefix_and_suffix"] = lines.infills["greedy"].exact / n
            report.exact_match["prefix_and_suffix_editor"] = lines.infills["editor"].exact / n
            report.ended = {name: i.shares(n) for name, i in lines.infills.items()}
    return report


def _prefix_context(prefix: bytes, room: int) -> list[int]:
    """The prefix as plain left-to-right reading: its last `room` bytes, after EOS when all of it fits."""
    ids = list(prefix[-room:]) if room > 0 else []
    return [EOS_ID, *ids][-room:] if len(prefix) < room else ids


def _bits(model: MultiScaleTransformer, context: list[int], target: bytes) -> float:
    """Bits the model spends on `target` (bytes) right after `context` (ids), in one forward pass."""
    ids = torch.tensor([[*context, *target]])
    logits = model(ids[:, :-1]).float()[0, len(context) - 1 :]  # the predictions of target's bytes
    nats = F.cross_entropy(logits, ids[0, len(context) :], reduction="sum")
    return float(nats) / float(torch.log(torch.tensor(2.0)))


def _infill(model: MultiScaleTransformer, hole: Hole, params: SamplingParams) -> tuple[bytes, str | None]:
    """An editor's infilling request at the hole, and what ended it (RowState.stopped_by)."""
    limit = max_middle("line", model.config.max_seq_len) + 1
    infill = Infill(hole.prefix, hole.suffix)
    plan = fim.plan(model.config, infill, limit)
    line = hole.prefix[hole.prefix.rfind(b"\n") + 1 :]  # the cursor's line up to the cursor
    indent = len(line) - len(line.lstrip(b" \t"))
    stream = TextStream(
        model, plan.ids, plan.max_tokens, params, list(plan.stop), min_indent=indent, stop_repeated_lines=True
    )
    return b"".join(stream), stream.stopped_by


def _greedy_prefix_only(model: MultiScaleTransformer, hole: Hole) -> bytes:
    """The same prefix reading as the bits: the decoder slides its window if the line runs long."""
    window = model.config.max_seq_len
    context = _prefix_context(hole.prefix, window - len(hole.middle))
    return b"".join(TextStream(model, context, max_middle("line", window) + 1, GREEDY, [b"\n"]))
