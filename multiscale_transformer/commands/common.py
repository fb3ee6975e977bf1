"""Flags and helpers several subcommands share: model selection, threads, typed argument parsers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from multiscale_transformer.settings import (  # noqa: F401  (re-exported: the commands' flag types)
    default_threads,
    fraction,
    non_negative_float,
    non_negative_int,
    penalty,
    positive_float,
    positive_int,
)

if TYPE_CHECKING:
    from multiscale_transformer.model.model import MultiScaleTransformer


# Generating one byte at a time is bound by memory and per-op latency, not arithmetic: on this
# project's 2-core machine a second intra-op thread made it slower (bench/generate.py: micro 120 vs
# 157-176 bytes/s; bench/serve.py, 16 clients: 458 vs 600 bytes/s), so generate and serve use one.
DECODE_THREADS = 1


def add_threads_argument(p: argparse.ArgumentParser, default: str = "cores available") -> None:
    p.add_argument("--threads", type=positive_int, default=None, help=f"intra-op CPU threads (default: {default})")


def set_threads(n: int | None) -> None:
    import torch

    torch.set_num_threads(n or default_threads())


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--model", help="model directory or .pt checkpoint (default: the bundled model)")
    group.add_argument("--preset", help="a preset with random weights (for trying the code, not for output)")


def load_model_from_args(args: argparse.Namespace) -> MultiScaleTransformer:
    import torch

    from multiscale_transformer.model.config import ModelConfig
    from multiscale_transformer.model.model import MultiScaleTransformer

    if getattr(args, "preset", None):
        torch.manual_seed(0)
        return MultiScaleTransformer(ModelConfig.from_name(args.preset)).eval()
    return MultiScaleTransformer.from_pretrained(model_path_from_args(args))


def model_path_from_args(args: argparse.Namespace) -> Path:
    """--model, or the model bundled with the package when none is given."""
    from multiscale_transformer.pretrained import default_model_path

    return Path(args.model) if getattr(args, "model", None) else default_model_path()
