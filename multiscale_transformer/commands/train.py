"""`axl train`: train a model on Python code (default: this interpreter's standard library) with Muon + WSD."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from multiscale_transformer.errors import UserError
from multiscale_transformer.settings import add_flags, duration, from_flags, positive_int

if TYPE_CHECKING:
    from multiscale_transformer.model.config import ModelConfig
    from multiscale_transformer.training.settings import TrainSettings

# duration: the --time-budget type, for bench/
__all__ = ["DEFAULT_PRESET", "add_arguments", "duration", "run", "settings"]

# The layout `axl train` has trained by default since Hourglass pooling was adopted (docs/quality.md).
DEFAULT_PRESET = "tiny-coarse20"

# Config fields a fine-tune (--init-from) may change: none of them changes a weight's shape.
WEIGHTLESS_FIELDS = frozenset({"max_seq_len", "attention_window", "coarse_window", "dropout"})


def add_arguments(p: argparse.ArgumentParser) -> None:
    from multiscale_transformer.model.config import PRESETS
    from multiscale_transformer.training.settings import MODEL, TrainSettings

    groups = {MODEL: p.add_argument_group(MODEL)}  # the flags that build the config, then the settings'
    groups[MODEL].add_argument(
        "--preset",
        help=f"model preset (default {DEFAULT_PRESET}; {', '.join(PRESETS)}; see axl info --preset NAME)",
    )
    groups[MODEL].add_argument(
        "--config", help="JSON object or file of fields over the preset, e.g. '{\"dropout\": 0.1}'"
    )
    groups[MODEL].add_argument(
        "--context",
        type=positive_int,
        help="max_seq_len: bytes of context per training window (with --init-from: context extension)",
    )
    add_flags(p, TrainSettings, groups=groups)


def _config(args: argparse.Namespace) -> ModelConfig:
    import dataclasses

    from multiscale_transformer.model.config import ModelConfig

    overrides = _overrides(args)
    if args.init_from is not None:
        if args.preset:
            raise UserError("--init-from takes the model's own config; drop --preset")
        from multiscale_transformer.model.model import MultiScaleTransformer

        # Fails here, with one line, on a bad model path.
        config = MultiScaleTransformer.from_pretrained(args.init_from).config
        # A fine-tune may read longer windows (context extension) or change dropout: fields that leave
        # every weight's shape as it is. Anything else would not load the weights it starts from.
        changed = sorted(set(overrides) - WEIGHTLESS_FIELDS)
        if changed:
            raise UserError(
                f"--init-from keeps the model's weights, so --config may change only "
                f"{', '.join(sorted(WEIGHTLESS_FIELDS))}; drop {', '.join(changed)}"
            )
        return dataclasses.replace(config, **overrides)
    try:
        return ModelConfig.from_name(args.preset or DEFAULT_PRESET, **overrides)
    except TypeError as exc:
        raise UserError(f"--config: {exc}") from None


def _overrides(args: argparse.Namespace) -> dict:
    """The config fields --config and --context set."""
    overrides: dict = {}
    if args.config:
        text = args.config
        if not text.lstrip().startswith("{"):
            try:
                text = Path(text).read_text(encoding="utf-8")
            except OSError as exc:
                raise UserError(
                    f"--config {args.config}: not a JSON object nor a readable file ({exc.strerror})"
                ) from None
        try:
            overrides = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"--config: invalid JSON ({exc})") from None
        if not isinstance(overrides, dict):
            raise UserError("--config: expected a JSON object of config fields")
    if args.context:
        overrides["max_seq_len"] = args.context
    return overrides


def settings(args: argparse.Namespace) -> TrainSettings:
    """The run `axl train` would start for these parsed flags."""
    from multiscale_transformer.training.settings import TrainSettings

    name = f"AXL-{args.preset or ('custom' if args.init_from else DEFAULT_PRESET)}"
    return from_flags(TrainSettings, args, config=_config(args), model_name=name)


def run(args: argparse.Namespace) -> int:
    from multiscale_transformer.training.trainer import Trainer

    Trainer(settings(args)).run()
    return 0
