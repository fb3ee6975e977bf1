"""What compressors pay for the bytes at each distance into their files (evaluation/bpb.py POSITION_BANDS),
beside the model's own breakdown: how much earlier bytes of the same file are worth to a coder that
remembers them, at the same positions the model's numbers are for.

A band's cost is what compressing the file up to the band's end adds over compressing it up to the
band's start: 8 * (|C(file[:end])| - |C(file[:start])|), with |C(empty)| standing for the start of
the file, so the container's header and footer are charged to no band.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from multiscale_transformer.evaluation.baselines import COMPRESSORS
from multiscale_transformer.evaluation.bpb import POSITION_BANDS, band_sizes


def band_bits(data: bytes, compress: Callable[[bytes], bytes]) -> list[float]:
    """Bits the compressor spends on the bytes of each POSITION_BANDS band of one file."""
    empty = len(compress(b""))
    ends = [min(len(data), hi if hi is not None else len(data)) for _, hi in POSITION_BANDS]
    sizes, before = [], empty
    for (lo, _), end in zip(POSITION_BANDS, ends, strict=True):
        if end <= lo:
            sizes.append(0.0)
            continue
        size = len(compress(data[:end]))
        sizes.append(8.0 * (size - before))
        before = size
    return sizes


def compressor_bands(files: Sequence[bytes], compressors: Sequence[str] = ("xz -9e",)) -> dict[str, list[float | None]]:
    """Compressor name -> bits per byte in each band over all files (None where no file reaches it)."""
    n = [sum(band_sizes(len(f))[b] for f in files) for b in range(len(POSITION_BANDS))]
    out: dict[str, list[float | None]] = {}
    for name in compressors:
        bits = [0.0] * len(POSITION_BANDS)
        for f in files:
            for b, x in enumerate(band_bits(f, COMPRESSORS[name])):
                bits[b] += x
        out[name] = [bits[b] / n[b] if n[b] else None for b in range(len(POSITION_BANDS))]
    return out
