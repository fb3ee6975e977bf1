"""Fill-in-the-middle training data (Bavarian et al. 2022): move a random middle span to the end.

Applied per document inside each training window ("context-level" FIM in the paper): the window
is split at EOS, each piece is transformed with probability `rate`, and the result is cut back to
the window's length. PSM order is `<PRE> prefix <SUF> suffix <MID> middle`; SPM order (the
paper's variant, sharing PSM's sentinels) is `<PRE> <SUF> suffix <MID> prefix middle`. A piece
that ended with an EOS keeps it after its middle, so the model learns to end an infilling with EOS.
Split points fall on UTF-8 character boundaries, so prefix, middle and suffix are each valid text.
"""

from __future__ import annotations

import numpy as np

from multiscale_transformer.model.vocab import EOS_ID, FIM_MIDDLE_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID

SPM_SHARE = 0.5  # share of transformed pieces in SPM order (the paper trains both jointly)


def char_starts(piece: np.ndarray) -> np.ndarray:
    """Offsets 0..len(piece) at which a split leaves whole UTF-8 characters on both sides."""
    continuation = (piece >= 0x80) & (piece < 0xC0)
    inner = np.flatnonzero(~continuation)
    return np.append(inner, len(piece))


def fim_piece(piece: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One document piece (bytes only, no EOS) in PSM or SPM order, two split points at random."""
    lo, hi = np.sort(rng.choice(char_starts(piece), size=2, replace=True))
    prefix, middle, suffix = piece[:lo], piece[lo:hi], piece[hi:]
    if rng.random() < SPM_SHARE:
        parts = ([FIM_PREFIX_ID, FIM_SUFFIX_ID], suffix, [FIM_MIDDLE_ID], prefix, middle)
    else:
        parts = ([FIM_PREFIX_ID], prefix, [FIM_SUFFIX_ID], suffix, [FIM_MIDDLE_ID], middle)
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def apply_fim(window: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """The window (n,) with each of its documents FIM-transformed with probability `rate`; still (n,)."""
    if rate <= 0:
        return window
    eos = np.flatnonzero(window == EOS_ID)
    bounds = [0, *(eos + 1).tolist()]
    ends = [*eos.tolist(), len(window)]
    out: list[np.ndarray] = []
    for start, end in zip(bounds, ends, strict=True):
        piece = window[start:end]
        if len(piece) and rng.random() < rate:
            piece = fim_piece(piece, rng)
        out.append(piece)
        if end < len(window):
            out.append(np.array([EOS_ID], dtype=np.int64))
    return np.concatenate(out)[: len(window)]
