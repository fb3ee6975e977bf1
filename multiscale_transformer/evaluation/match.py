"""A match model of the repository read so far, mixed with the network's distribution (issue 28, 2b).

Context-mixing compressors (lpaq, cmix) keep a "match model": find the last place in everything read so
far where the bytes just read occurred too, and predict the byte that followed them there. A repository
repeats itself far beyond any context window (names, call patterns, whole blocks in tests and docs), and
this costs a dictionary lookup per byte.

`find_matches` reads a repository's files in order as one stream: every file before, then the current
file up to the byte being predicted (a file never sees its own later bytes, nor a later file). After
MIN_MATCH bytes that occurred before, it predicts the byte that followed them there, and follows that
earlier occurrence while it keeps predicting right. `mix` gives each byte the probability
`(1 - w) p_net(byte) + w [byte == predicted]`, with w chosen per match length from a fixed grid by
follow the leader: the weight that would have cost the fewest bits on the earlier bytes of that length.
Nothing is fitted on a byte before it is scored, so any mode's bits can be mixed afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Chosen on two packages outside every evaluation set (funcy, tenacity; docs/evaluation.md): 5 beat 8,
# 12 and 16 on both.
MIN_MATCH = 5
WEIGHTS = np.array([0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98])
LENGTH_STEP = 4  # match lengths MIN_MATCH.., +4.., +8.. each have their own weight; longer share the last
LENGTH_BUCKETS = 16
SEPARATOR = 0  # between files in the stream: a byte no Python source holds


@dataclass(frozen=True)
class Matches:
    """Per byte of one file: the byte the match model predicts (-1: none) and how long its match is."""

    predicted: np.ndarray  # (n,) int16
    length: np.ndarray  # (n,) int32


def find_matches(files: Sequence[bytes], min_match: int = MIN_MATCH) -> list[Matches]:
    """The match model's prediction for every byte of every file, reading the files in order."""
    history = bytearray()
    last: dict[bytes, int] = {}  # min_match bytes -> where the byte after their last occurrence sits
    out = []
    for data in files:
        predicted = np.full(len(data), -1, dtype=np.int16)
        length = np.zeros(len(data), dtype=np.int32)
        at, run = 0, 0  # the earlier occurrence being followed, and how many bytes it has matched
        for t, byte in enumerate(data):
            if run == 0 and len(history) >= min_match:
                found = last.get(bytes(history[-min_match:]))
                if found is not None:
                    at, run = found, min_match
            if run:
                predicted[t], length[t] = history[at], run
            if len(history) >= min_match:
                last[bytes(history[-min_match:])] = len(history)
            history.append(byte)
            at, run = (at + 1, run + 1) if run and history[at] == byte else (0, 0)
        history.append(SEPARATOR)
        out.append(Matches(predicted, length))
    return out


def mix(nats: Sequence[np.ndarray], files: Sequence[bytes], matches: Sequence[Matches]) -> list[np.ndarray]:
    """Each byte's cost (-ln p) under the network mixed with the match model, in the files' order;
    nats: per file, the network's -ln p of each byte."""
    cost = np.zeros((LENGTH_BUCKETS, len(WEIGHTS)))  # -ln p of each weight, per bucket, so far
    out = []
    for file_nats, data, m in zip(nats, files, matches, strict=True):
        mixed = file_nats.copy()
        actual = np.frombuffer(data, dtype=np.uint8)
        for t in np.flatnonzero(m.predicted >= 0):
            bucket = min(LENGTH_BUCKETS - 1, (int(m.length[t]) - MIN_MATCH) // LENGTH_STEP)
            p = (1.0 - WEIGHTS) * np.exp(-file_nats[t]) + WEIGHTS * float(m.predicted[t] == actual[t])
            nats_by_weight = -np.log(np.maximum(p, 1e-300))
            mixed[t] = nats_by_weight[int(np.argmin(cost[bucket]))]
            cost[bucket] += nats_by_weight
        out.append(mixed)
    return out
