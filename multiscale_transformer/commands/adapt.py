"""`axl adapt`: fine-tune a model on one repository for a few minutes, so that it knows the project's
names and habits (issue 28); the result is a model directory like any other (`axl serve --model OUT`).

It is `axl train --init-from MODEL --data REPO` with a fine-tuning recipe: the model's own config,
Muon + WSD at the learning rate the bundled model was fine-tuned with (docs/pretrained.md, stage 6),
fill-in-the-middle when the model has it, and a share of the repository's files held out so that
the validation bits/byte in metrics.jsonl say what the adaptation is worth on files it did not read.
Checkpoints, `--resume` after a kill and the time budget are the trainer's.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from multiscale_transformer.commands.common import fraction, model_path_from_args, positive_float, positive_int

if TYPE_CHECKING:
    from multiscale_transformer.training.settings import TrainSettings

FINE_TUNING_LR = 1e-3  # stage 6 of the bundled model; 3e-3 made it worse (docs/pretrained.md)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", type=Path, required=True, help="the repository: its .py files are what the model reads")
    p.add_argument("--out", type=Path, required=True, help="output directory (the adapted model, metrics, checkpoints)")
    p.add_argument("--model", help="the model to adapt (default: the bundled model)")
    p.add_argument("--minutes", type=positive_float, default=5.0, help="training time in minutes (default 5)")
    p.add_argument(
        "--lr", type=positive_float, default=FINE_TUNING_LR, help=f"peak learning rate (default {FINE_TUNING_LR})"
    )
    p.add_argument(
        "--holdout", type=fraction, default=0.1, help="share of the repository's files held out (default 0.1)"
    )
    p.add_argument("--batch-size", type=positive_int, default=None, help="windows per step (default: 16 x 256 bytes)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, help="prepared-corpus cache (default ~/.cache/axl/corpus)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def settings(args: argparse.Namespace) -> TrainSettings:
    from multiscale_transformer.model.model import MultiScaleTransformer
    from multiscale_transformer.training.data import repository_documents
    from multiscale_transformer.training.settings import TrainSettings

    repo = args.repo
    repository_documents(repo, "adapt to")  # refused in one line before the model loads
    source = model_path_from_args(args)
    config = MultiScaleTransformer.from_pretrained(source).config  # one line on a bad model path
    # The bytes per step of the bundled model's training, whatever the context.
    batch = args.batch_size or max(1, 16 * 256 // config.max_seq_len)
    return TrainSettings(
        out=args.out,
        config=config,
        model_name=f"AXL-adapted-{repo.resolve().name}",
        init_from=source,
        data=[repo],
        val_fraction=args.holdout,
        optimizer="muon",
        schedule="wsd",
        lr=args.lr,
        batch_size=batch,
        time_budget=args.minutes * 60,
        checkpoint_minutes=min(5.0, args.minutes / 5),  # a kill loses at most a fifth of the run
        cache_dir=args.cache_dir,
        eval_every=max(1, 200 * 4096 // (batch * config.max_seq_len)),
        threads=args.threads,
        seed=args.seed,
        resume=args.resume,
        quiet=args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    from multiscale_transformer.training.trainer import Trainer

    Trainer(settings(args)).run()
    return 0
