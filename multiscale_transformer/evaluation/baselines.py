"""What general-purpose compressors and a context-free model reach on exactly the bytes a model is scored on.

Sizes are of the complete compressed stream (headers included), as `gzip -9 FILE` etc. would write it;
"each file alone" sums the per-file sizes (what a model scoring files independently competes with),
"concatenated" compresses the files joined back to back (a compressor then learns across files).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip -9": lambda data: gzip.compress(data, compresslevel=9, mtime=0),
    "bzip2 -9": lambda data: bz2.compress(data, compresslevel=9),
    "xz -9e": lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
}


def unigram_entropy(data: bytes) -> float:
    """Bits per byte of an ideal order-0 code (byte frequencies known in advance): a context-free floor."""
    counts = Counter(data)
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


@dataclass(frozen=True)
class Baselines:
    bytes: int
    per_file: dict[str, float]  # compressor -> bits per byte, each file compressed alone
    concatenated: dict[str, float]  # compressor -> bits per byte, all files as one stream
    unigram_entropy: float

    def rows(self) -> list[tuple[str, float]]:
        """(label, bits per byte) in the order the tables print them."""
        out = [(f"{name}, each file alone", bpb) for name, bpb in self.per_file.items()]
        out += [(f"{name}, files concatenated", bpb) for name, bpb in self.concatenated.items()]
        return [*out, ("unigram entropy (order 0)", self.unigram_entropy)]

    def to_json(self) -> dict[str, object]:
        return {
            "bytes": self.bytes,
            "per_file": self.per_file,
            "concatenated": self.concatenated,
            "unigram_entropy": self.unigram_entropy,
        }


def compressor_baselines(files: Sequence[bytes]) -> Baselines:
    total = sum(len(f) for f in files)
    if not total:
        raise ValueError("no bytes to compress")
    joined = b"".join(files)
    per_file = {name: 8 * sum(len(fn(f)) for f in files) / total for name, fn in COMPRESSORS.items()}
    concatenated = {name: 8 * len(fn(joined)) / total for name, fn in COMPRESSORS.items()}
    return Baselines(total, per_file, concatenated, unigram_entropy(joined))


# PPMd (order 16, pyppmd's default variant I) learns long contexts within one stream: a strong
# no-training baseline for a repository compressed as a whole. 256 MB keeps a package's model from
# being restarted when memory runs out.
PPMD_ORDER = 16
PPMD_MEMORY = 256 << 20


def _ppmd() -> Callable[[bytes], bytes] | None:
    try:
        import pyppmd
    except ImportError:
        return None
    return lambda data: pyppmd.compress(data, max_order=PPMD_ORDER, mem_size=PPMD_MEMORY)


def repository_compressors(files: Sequence[bytes]) -> dict[str, float]:
    """Bits per byte of xz -9e and (where pyppmd is installed) PPMd order 16 on a repository's files,
    each file alone and all files as one stream (label -> bits per byte)."""
    total = sum(len(f) for f in files)
    if not total:
        raise ValueError("no bytes to compress")
    compressors = {"xz -9e": COMPRESSORS["xz -9e"]}
    if (ppmd := _ppmd()) is not None:
        compressors[f"PPMd order {PPMD_ORDER}"] = ppmd
    out = {}
    for name, fn in compressors.items():
        out[f"{name}, each file alone"] = 8 * sum(len(fn(f)) for f in files) / total
        out[f"{name}, whole repository"] = 8 * len(fn(b"".join(files))) / total
    return out
