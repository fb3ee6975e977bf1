"""`axl train`: train a model on Python code (default: this interpreter's standard library) with Muon + WSD."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multiscale_transformer.errors import UserError
from multiscale_transformer.settings import add_flags, duration, from_flags, positive_int

if TYPE_CHECKING:
    from multiscale_transformer.training.settings import TrainSettings

# duration: the --time-budget type, for bench/
__all__ = ["add_arguments", "duration", "run", "settings", "train_architecture"]


def train_architecture(fields: dict[str, Any]) -> dict[str, Any]:
    """What a new model gets unless --config says otherwise: the layout that won docs/quality.md's
    sweeps for its depth n (layers per scale). Every multi-scale model: the coarse scales pool the
    fine stack's output (Hourglass; coarse20). From n = 2 (post20, `mini`: ahead of its
    equal-parameter flat twin by 0.06-0.11 bits/byte at 20 CPU-minutes): only the coarse scales
    attend into the bytes (cross blocks k->1x), their stacks are one layer deeper than the fine one (a
    layer there costs 1/k per byte), and n byte-level layers follow the fusion. At n = 1 (`tiny`) that
    layout measured worse (tiny10), so it keeps AXL's. The presets stay the published architecture,
    so published checkpoints load unchanged. fields: the preset's fields with the user's overrides,
    which take precedence over these."""
    n, factors = fields["n_layers_per_scale"], fields.get("downsample_factors", [1, 2, 4])
    if not isinstance(n, int) or not isinstance(factors, list) or len(factors) < 2:
        return {}  # a single-scale model (none of this applies), or fields ModelConfig will refuse
    if n < 2:
        return {"coarse_input": "fine"}
    scales = len(factors)
    return {
        "coarse_input": "fine",
        "cross_pairs": [[s, 0] for s in range(1, scales)],
        "layers_per_scale": [n] + [n + 1] * (scales - 1),
        "post_fusion_layers": n,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    from multiscale_transformer.model.config import PRESETS
    from multiscale_transformer.training.settings import MODEL, TrainSettings

    groups = {MODEL: p.add_argument_group(MODEL)}  # the flags that build the config, then the settings'
    groups[MODEL].add_argument("--preset", help="model preset (default tiny; see axl info --preset NAME)")
    mini = json.dumps(train_architecture(PRESETS["mini"]))
    groups[MODEL].add_argument(
        "--config", help=f"JSON object or file of fields over the preset (default: the adopted layout, mini: {mini})"
    )
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
        preset = ModelConfig.from_name(args.preset or "tiny").to_dict()
        adopted = train_architecture({**preset, **overrides})
        return ModelConfig.from_name(args.preset or "tiny", **{**adopted, **overrides})
    except TypeError as exc:
        raise UserError(f"--config: {exc}") from None


def settings(args: argparse.Namespace) -> TrainSettings:
    """The run `axl train` would start for these parsed flags."""
    from multiscale_transformer.training.settings import TrainSettings

    name = f"AXL-{args.preset or ('custom' if args.init_from else 'tiny')}"
    return from_flags(TrainSettings, args, config=_config(args), model_name=name)


def run(args: argparse.Namespace) -> int:
    from multiscale_transformer.training.trainer import Trainer

    Trainer(settings(args)).run()
    return 0
