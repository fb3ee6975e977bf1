"""Does a windowed FIM layout teach the model to read the suffix? An experiment, not a user option.

SPM (training/fim.py, generation/fim.py) lays an infilling out as `<PRE><SUF> suffix <MID> prefix
middle`: behind a prefix of a few KB the suffix lies beyond every window of the 8,192-byte model
(256 bytes at the bytes, 1,024 at the coarse scales), and `axl eval --fim` finds the suffix worth
almost nothing. The windowed layout keeps the suffix within reach: `far <PRE><SUF> suffix[:R] <MID>
near middle`, near the prefix's last R bytes and far the rest of it before the sentinels (R = 256),
the rest of the suffix after the piece's EOS as plain text (a window keeps its length).

    # fine-tune the same model the same way, one arm per layout (training's SPM half is what changes)
    python bench/fim_layout.py train windowed -- --init-from MODEL --data stdlib CORPUS --out A ...
    python bench/fim_layout.py train spm -- --init-from MODEL --data stdlib CORPUS --out B ...
    # middle bits/byte of holes in DIRS (never the held-out sets): prefix alone, SPM prompt, windowed prompt
    python bench/fim_layout.py eval --models A,B,MODEL --data DIR [DIR ...] --per-kind 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from multiscale_transformer.evaluation.bpb import validation_documents
from multiscale_transformer.evaluation.infilling import _bits, _prefix_context, make_holes
from multiscale_transformer.generation import fim as inference
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.model.vocab import EOS_ID, FIM_MIDDLE_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID
from multiscale_transformer.training import data
from multiscale_transformer.training import fim as training

REACH = 256  # bytes of suffix, and of prefix between it and the middle


def windowed_piece(piece: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """training.fim_piece with the windowed layout in place of SPM, as a training.apply_fim
    `transform`: (the ids, how many of the piece's bytes they hold: all but the suffix's rest)."""
    span = training.line_span(piece, rng) if rng.random() < training.LINE_SHARE else None
    lo, hi = span if span is not None else np.sort(rng.choice(training.char_starts(piece), size=2, replace=True))
    prefix, middle, suffix = piece[:lo], piece[lo:hi], piece[hi:]
    if rng.random() >= training.SPM_SHARE:  # PSM as before
        parts = ([FIM_PREFIX_ID], prefix, [FIM_SUFFIX_ID], suffix, [FIM_MIDDLE_ID], middle)
        return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]), len(piece)
    starts = training.char_starts(prefix)
    cut = int(starts[np.searchsorted(starts, max(0, len(prefix) - REACH))])  # a character boundary
    ends = training.char_starts(suffix)
    keep = int(ends[np.searchsorted(ends, REACH, side="right") - 1])
    parts = (prefix[:cut], [FIM_PREFIX_ID, FIM_SUFFIX_ID], suffix[:keep], [FIM_MIDDLE_ID], prefix[cut:], middle)
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]), int(hi) + keep


def apply_windowed(window: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    return training.apply_fim(window, rate, rng, windowed_piece)


def windowed_prompt(infill: inference.Infill, window: int, room: int) -> list[int]:
    """The inference prompt in the windowed layout, from what generation/fim.py `fit` keeps."""
    extra, prefix, suffix = inference.fit(infill, window, room)
    near = inference._whole_chars_from_left(prefix[-REACH:]) if len(prefix) > REACH else prefix
    suffix = inference._whole_chars_from_right(suffix[:REACH])
    far = prefix[: len(prefix) - len(near)]
    return [EOS_ID, *extra, *far, FIM_PREFIX_ID, FIM_SUFFIX_ID, *suffix, FIM_MIDDLE_ID, *near]


def evaluate(models: list[str], dirs: list[Path], per_kind: int) -> None:
    torch.set_num_threads(1)
    holes = make_holes(validation_documents(dirs, all_files=True), per_kind, 8192, seed=0)
    for path in models:
        model = MultiScaleTransformer.from_pretrained(path).eval()
        window = model.config.max_seq_len
        totals: dict[str, list[float]] = {}
        with torch.no_grad():
            for hole in holes:
                infill, room = inference.Infill(hole.prefix, hole.suffix), len(hole.middle)
                t = totals.setdefault(hole.kind, [0, 0.0, 0.0, 0.0])
                t[0] += room
                t[1] += _bits(model, _prefix_context(hole.prefix, window - room), hole.middle)
                t[2] += _bits(model, inference.infill_prompt(infill, window, room), hole.middle)
                t[3] += _bits(model, windowed_prompt(infill, window, room), hole.middle)
        for kind, (n, alone, spm, windowed) in totals.items():
            print(f"{path} {kind}s ({n:.0f} middle bytes): prefix alone {alone / n:.3f}, "
                  f"SPM {spm / n:.3f} ({100 * (1 - spm / alone):+.1f}%), "
                  f"windowed {windowed / n:.3f} ({100 * (1 - windowed / alone):+.1f}%)", flush=True)  # fmt: skip


def main() -> int:
    if sys.argv[1:2] == ["train"]:  # train LAYOUT -- axl train's arguments
        layout, rest = sys.argv[2], sys.argv[4:] if sys.argv[3:4] == ["--"] else sys.argv[3:]
        if layout == "windowed":
            data.apply_fim = apply_windowed  # sample_batch's FIM: the only thing the arms differ in
        from multiscale_transformer.cli import main as axl

        return axl(["train", *rest])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["eval"])
    parser.add_argument("--models", required=True, help="comma-separated model directories")
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--per-kind", type=int, default=50)
    args = parser.parse_args()
    evaluate(args.models.split(","), args.data, args.per_kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
