"""`axl info`: parameter counts per part and the configuration, for a preset or a saved model."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from multiscale_transformer.commands.common import add_model_arguments, load_model_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")


# The model's top-level modules, as the breakdown names them (tests/test_presets.py: every parameter
# falls under one of these, so a module added to the model cannot go uncounted under a raw name).
PARTS = {
    "tok_emb": "byte embedding (tied head)",
    "down": "downsampling",
    "up": "upsampling",
    "stacks": "scale stacks",
    "cross": "cross-scale blocks",
    "fusion": "fusion gate",
    "post": "layers after the fusion",
    "norm_f": "final norm",
}


def _part(name: str) -> str:
    head = name.split(".")[0]
    return PARTS.get(head, head)


def run(args: argparse.Namespace) -> int:
    from multiscale_transformer.model.config import PUBLISHED_PARAMETERS, preset_key

    model = load_model_from_args(args)
    parts: Counter[str] = Counter()
    for name, p in model.named_parameters():
        parts[_part(name)] += p.numel()
    if len(model.config.downsample_factors) > 1:
        for i, k in enumerate(model.config.downsample_factors):
            parts[f"  stack {k}x"] = sum(p.numel() for p in model.stacks[i].parameters())
    total = model.num_parameters()
    published = PUBLISHED_PARAMETERS.get(preset_key(args.preset)) if args.preset else None
    if args.json:
        print(json.dumps({"parameters": total, "parts": dict(parts), "config": model.config.to_dict()}))
        return 0
    print(f"parameters: {total:,}" + (f" (published: {published:,})" if published else ""))
    for part, n in parts.items():
        print(f"  {part:<28} {n:>14,}")
    print("config:")
    for key, value in model.config.to_dict().items():
        print(f"  {key:<28} {value}")
    return 0
