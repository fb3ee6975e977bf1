"""`axl train`: train a model on Python code (default: this interpreter's standard library) with Muon + WSD."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from multiscale_transformer.errors import UserError
from multiscale_transformer.settings import add_flags, duration, from_flags, positive_int

__all__ = ["TRAIN_ARCHITECTURE", "add_arguments", "duration", "run"]  # duration: the --time-budget type, for bench/

# What a new model gets unless --config says otherwise: the architecture options that won
# docs/quality.md's sweeps (Hourglass pooling of the fine stack's output: 0.12-0.24 bits/byte better
# at 20 CPU-minutes). The presets stay the published architecture, so published checkpoints load.
TRAIN_ARCHITECTURE: dict[str, str] = {"coarse_input": "fine"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from multiscale_transformer.training.settings import MODEL, TrainSettings

    groups = {MODEL: p.add_argument_group(MODEL)}  # the flags that build the config, then the settings'
    groups[MODEL].add_argument("--preset", help="model preset (default tiny; see axl info --preset NAME)")
    default = json.dumps(TRAIN_ARCHITECTURE)
    groups[MODEL].add_argument("--config", help=f"JSON object or file of fields over the preset (default: {default})")
    groups[MODEL].add_argument("--context", type=positive_int, help="max_seq_len: bytes of context per training window")
    add_flags(p, TrainSettings, groups=groups)


def _config(args: argparse.Namespace) -> object:
    from multiscale_transformer.model.config import ModelConfig

    if args.init_from is not None:
        if args.preset or args.config or args.context:
            raise UserError("--init-from takes the model's own config; drop --preset, --config and --context")
        from multiscale_transformer.model.model import MultiScaleTransformer

        # Fails here, with one line, on a bad model path.
        return MultiScaleTransformer.from_pretrained(args.init_from).config
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
    try:
        return ModelConfig.from_name(args.preset or "tiny", **{**TRAIN_ARCHITECTURE, **overrides})
    except TypeError as exc:
        raise UserError(f"--config: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from multiscale_transformer.training.trainer import Trainer, TrainSettings

    config = _config(args)
    name = f"AXL-{args.preset or ('custom' if args.init_from else 'tiny')}"
    Trainer(from_flags(TrainSettings, args, config=config, model_name=name)).run()
    return 0
