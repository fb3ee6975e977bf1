"""Fill-in-the-middle training data (Bavarian et al. 2022): move a middle span to the end.

Applied per document inside each training window ("context-level" FIM in the paper): the window
is split at EOS, each piece is transformed with probability `rate`, and the result is cut back to
the window's length. PSM order is `<PRE> prefix <SUF> suffix <MID> middle`; SPM order (the
paper's variant, sharing PSM's sentinels) is `<PRE> <SUF> suffix <MID> prefix middle`.

Every transformed piece ends with an EOS right after its middle, so the model learns where an
infilling ends. A piece cut by the window's end (most pieces of a window taken from inside a long
file) is transformed from its first bytes, a random number of them, and after its EOS the window
goes on with the rest of the piece as plain text. Before, such a middle ran to the window's end and
the model learned that an infilling never ends (issue 29: 32 of 32 editor infills ran to their cap);
ending every such example exactly at the window's last position instead taught it a shortcut, EOS
at position 256, P(EOS) 0.99 there and 0.002 after a real hole's middle. Half of the middles are
whole lines (1 line in half of those, else 2-5), starting after the indentation as an editor's
cursor does, the other half random spans; split points fall on UTF-8 character boundaries, so
prefix, middle and suffix are each valid text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from multiscale_transformer.model.vocab import EOS_ID, FIM_MIDDLE_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID

if TYPE_CHECKING:
    from multiscale_transformer.model.config import ModelConfig

# As in Bavarian et al.; measured here to cost at most 0.012 bits/byte left to right (docs/editors.md).
DEFAULT_FIM_RATE = 0.5
SPM_SHARE = 0.5  # share of transformed pieces in SPM order (the paper trains both jointly)
LINE_SHARE = 0.5  # share of middles that are whole lines (the holes editors ask for)
SENTINELS = 3  # <PRE>, <SUF>, <MID>: what a transformed piece adds, before its EOS
# A layout of one piece: (its ids, how many of the piece's first bytes they hold).
Transform = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, int]]


def default_fim_rate(config: ModelConfig) -> float:
    """The share of documents a run trains as FIM unless told otherwise: the preset's `fim` decides."""
    return DEFAULT_FIM_RATE if config.fim else 0.0


def char_starts(piece: np.ndarray) -> np.ndarray:
    """Offsets 0..len(piece) at which a split leaves whole UTF-8 characters on both sides."""
    continuation = (piece >= 0x80) & (piece < 0xC0)
    inner = np.flatnonzero(~continuation)
    return np.append(inner, len(piece))


def line_span(piece: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """(lo, hi) of 1-5 whole lines of the piece, from the first one's indentation to before the last
    one's newline, the first one not blank; None when the piece has no such line."""
    newlines = np.flatnonzero(piece == ord("\n"))
    if len(newlines) == 0:
        return None
    starts = np.concatenate([[0], newlines[:-1] + 1]).astype(np.int64)  # lines ending inside the piece
    blank = (piece == ord(" ")) | (piece == ord("\t"))
    text = [i for i, (a, b) in enumerate(zip(starts, newlines, strict=True)) if not blank[a:b].all()]
    if not text:
        return None
    first = text[int(rng.integers(len(text)))]
    count = 1 if rng.random() < 0.5 else int(rng.integers(2, 6))
    last = min(first + count, len(starts)) - 1
    lo, hi = int(starts[first]), int(newlines[last])
    while blank[lo]:
        lo += 1
    return lo, hi


def fim_piece(piece: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One document piece (bytes only, no EOS) in PSM or SPM order: a middle of whole lines or between
    two random character boundaries; SENTINELS ids longer than the piece, without the EOS."""
    span = line_span(piece, rng) if rng.random() < LINE_SHARE else None
    lo, hi = span if span is not None else np.sort(rng.choice(char_starts(piece), size=2, replace=True))
    prefix, middle, suffix = piece[:lo], piece[lo:hi], piece[hi:]
    if rng.random() < SPM_SHARE:
        parts = ([FIM_PREFIX_ID, FIM_SUFFIX_ID], suffix, [FIM_MIDDLE_ID], prefix, middle)
    else:
        parts = ([FIM_PREFIX_ID], prefix, [FIM_SUFFIX_ID], suffix, [FIM_MIDDLE_ID], middle)
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def apply_fim(
    window: np.ndarray, rate: float, rng: np.random.Generator, transform: Transform | None = None
) -> np.ndarray:
    """The window (n,) with each of its documents FIM-transformed with probability `rate`; still (n,).

    A transformed piece is followed by EOS (the end of its middle, and of its document when the piece
    was whole). A piece the window cuts is transformed from a random number of its first bytes (at most
    what leaves room for its sentinels and that EOS), and its remaining bytes follow the EOS as plain
    text, so that an infilling's end falls anywhere in the window, never always at its last position.
    `transform` (for experiments with other layouts, bench/fim_layout.py) replaces `fim_piece`: it
    returns the ids and how many of the piece's first bytes they hold; the rest follows the EOS, and
    the next document follows the rest without one of its own."""
    if rate <= 0:
        return window
    n = len(window)
    eos = np.flatnonzero(window == EOS_ID)
    bounds = [0, *(eos + 1).tolist()]
    ends = [*eos.tolist(), n]
    out: list[np.ndarray] = []
    used = 0
    for start, end in zip(bounds, ends, strict=True):
        piece = window[start:end]
        room = n - used - SENTINELS - 1  # the most bytes a transformed piece can keep
        if min(len(piece), room) > 0 and rng.random() < rate:
            cut = end == n or len(piece) > room
            take = int(rng.integers(1, min(len(piece), room) + 1)) if cut else len(piece)
            body, held = (fim_piece(piece[:take], rng), take) if transform is None else transform(piece[:take], rng)
            part = np.concatenate([body, [EOS_ID], piece[held:]]).astype(np.int64)
        else:
            part = piece if end == n else np.append(piece, EOS_ID)
        out.append(part)
        used += len(part)
        if used >= n:
            break
    return np.concatenate(out)[:n]
