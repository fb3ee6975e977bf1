"""`axl card`: write a model card (README.md) for a model directory, every number measured on it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from multiscale_transformer.commands.common import add_threads_argument, model_path_from_args, set_threads
from multiscale_transformer.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model directory (default: the bundled model)")
    p.add_argument("--out", help="where to write the card (default: MODEL/README.md)")
    p.add_argument(
        "--data", nargs="+", action="extend", type=Path, help="held-out data (default: the stdlib validation split)"
    )
    p.add_argument("--gguf-dir", type=Path, help="an `axl export-gguf` output directory whose file sizes to list")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(p)


def run(args: argparse.Namespace) -> int:
    from multiscale_transformer.atomic import atomic_write_json
    from multiscale_transformer.evaluation.card import measure_card, render_card
    from multiscale_transformer.model.model import MultiScaleTransformer

    set_threads(args.threads)
    model_dir = model_path_from_args(args)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: a model card needs a model directory (config.json, weights, results.json)")
    if args.gguf_dir and not args.gguf_dir.is_dir():
        raise UserError(f"{args.gguf_dir}: no such GGUF directory")
    out = Path(args.out) if args.out else model_dir / "README.md"
    model = MultiScaleTransformer.from_pretrained(model_dir)
    numbers = measure_card(model, model_dir, args.data, args.gguf_dir, progress=not args.quiet)
    try:
        out.write_text(render_card(numbers), encoding="utf-8")
        atomic_write_json(out.with_name("card.json"), numbers)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the card ({exc.strerror})") from None
    ev = numbers["eval"]
    verdict = "PASS" if numbers["audit"]["passed"] else "FAIL"
    print(f"wrote {out}: {ev['bits_per_byte']:.3f} bits/byte on {ev['bytes']:,} held-out bytes, audit {verdict}")
    fine = numbers["eval_fine"]["bits_per_byte"]
    print(json.dumps({"bits_per_byte": ev["bits_per_byte"], "fine_bits_per_byte": fine, "audit": verdict}))
    return 0
