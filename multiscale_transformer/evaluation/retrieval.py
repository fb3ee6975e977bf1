"""Chunks of a repository's other files, ranked by BM25 over identifier tokens: what `axl eval --repo`'s
retrieval modes put in the context before a file's own bytes.

A chunk is a run of `lines` whole lines of one file, as in llama.vim's ring buffer (32 lines by default).
The query is the identifiers in the bytes before the cursor, never after it. The index used while
scoring file F holds the chunks of every file but F (leave one file out), so not only is no chunk of F
ever retrieved, F's bytes do not even reach the BM25 statistics (document frequencies, mean length):
otherwise bytes of F after the cursor would move the ranking of chunks used before it.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from multiscale_transformer.errors import UserError
from multiscale_transformer.training.data import Document

_IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
# Keywords occur in nearly every chunk; leaving them out of the index only saves work (BM25 would
# weigh them near zero anyway).
_KEYWORDS = frozenset(keyword.kwlist)

# How far back from the cursor the query reads: about as many lines as a chunk holds.
QUERY_BYTES = 1024

# llama.vim's ring buffer holds up to 16 chunks; no more are ranked per window.
TOP_K = 16


def identifiers(data: bytes) -> list[str]:
    """The identifier tokens of Python source, in order (keywords left out)."""
    words = (m.decode("ascii") for m in _IDENTIFIER.findall(data))
    return [w for w in words if w not in _KEYWORDS]


@dataclass(frozen=True)
class Chunk:
    file: int  # index of its document in the repository
    first_line: int  # 0-based
    data: bytes


def split_chunks(docs: Sequence[Document], lines: int) -> list[Chunk]:
    """Every document cut into runs of `lines` whole lines (the last one shorter); chunks without an
    identifier are left out (nothing could retrieve them)."""
    out = []
    for i, doc in enumerate(docs):
        rows = doc.data.splitlines(keepends=True)
        for first in range(0, len(rows), lines):
            data = b"".join(rows[first : first + lines])
            if identifiers(data):
                out.append(Chunk(i, first, data))
    return out


class LeaveOneOutIndex:
    """BM25 (bm25s) over the chunks of every file but one: `search` ranks the chunks of the files other
    than `file` for a query, from an index built without `file`'s chunks."""

    def __init__(self, chunks: Sequence[Chunk], file: int) -> None:
        bm25s = _bm25s()
        self.chunks = [c for c in chunks if c.file != file]
        self._bm25 = bm25s.BM25() if self.chunks else None
        if self._bm25 is not None:
            self._bm25.index([identifiers(c.data) for c in self.chunks], show_progress=False)

    def search(self, query: bytes, k: int = TOP_K) -> list[tuple[Chunk, float]]:
        """Up to k chunks with a positive score, best first (ties: the earlier chunk in the repository)."""
        if self._bm25 is None:
            return []
        vocab = self._bm25.vocab_dict
        tokens = [vocab[t] for t in identifiers(query) if t in vocab]
        if not tokens:
            return []
        scores = self._bm25.get_scores(tokens)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.chunks[j], float(scores[j])) for j in order if scores[j] > 0]


def pack_chunks(ranked: Sequence[Chunk], budget: int) -> list[Chunk]:
    """The best-ranked chunks that fit in `budget` ids, each costing its bytes plus one EOS separator;
    a chunk too long for what is left is passed over and the next tried (as llama.cpp's `input_extra`
    packing drops what does not fit). Returned in context order: the best chunk last, next to the file."""
    chosen, left = [], budget
    for chunk in ranked:
        if len(chunk.data) + 1 <= left:
            chosen.append(chunk)
            left -= len(chunk.data) + 1
    return chosen[::-1]


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError:
        raise UserError(
            "retrieval modes need bm25s: pip install 'multiscale-transformer[repo]' (or pip install bm25s)"
        ) from None
    return bm25s
