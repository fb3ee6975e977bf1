"""`axl train`: train a model on Python code (default: this interpreter's standard library) with Lion."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from multiscale_transformer.commands.common import (
    default_threads,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from multiscale_transformer.errors import UserError

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def duration(text: str) -> float:
    """Seconds from '20m', '90s', '1h', '1h30m' or a plain number of seconds."""
    m = _DURATION.match(text.strip().lower())
    if not text.strip() or not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 20m or 1h, got {text!r}")
    h, mins, secs = (float(g) if g else 0.0 for g in m.groups())
    seconds = h * 3600 + mins * 60 + secs
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, got {text!r}")
    return seconds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output directory (model, metrics, checkpoints)")
    m = p.add_argument_group("model")
    m.add_argument("--preset", help="model preset (default tiny; see axl info --preset NAME)")
    m.add_argument("--config", help="JSON object or file of config fields overriding the preset")
    m.add_argument("--context", type=positive_int, help="max_seq_len: bytes of context per training window")
    m.add_argument(
        "--init-from",
        type=Path,
        metavar="MODEL",
        help="start from this model's weights and config (fine-tuning; fresh optimizer and schedule)",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--data", nargs="+", type=Path, help="directories, files, .jsonl (content/text), .txt (default: stdlib)"
    )
    d.add_argument("--glob", default="*.py", help="file-name pattern inside --data directories (default *.py)")
    d.add_argument("--cache-dir", type=Path, help="prepared-corpus cache (default ~/.cache/axl/corpus)")
    d.add_argument("--val-fraction", type=fraction, default=0.05, help="share of files held out (default 0.05)")
    o = p.add_argument_group("optimisation")
    o.add_argument(
        "--optimizer",
        choices=["lion", "adamw", "sgd", "muon"],
        default="lion",
        help="default lion; muon = Muon for hidden matrices + AdamW for the rest",
    )
    o.add_argument(
        "--lr",
        type=non_negative_float,
        help="peak lr (default: lion 1e-3, adamw and muon 3e-3, sgd 0.1, x 256/d_model above 256)",
    )
    o.add_argument("--weight-decay", type=non_negative_float, help="default: lion 0.3, adamw and muon 0.1, sgd 0")
    o.add_argument("--batch-size", type=positive_int, default=16, help="windows per micro-batch per process")
    o.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per optimizer step")
    o.add_argument("--warmup", type=non_negative_int, help="warmup steps (default 5%% of the run, at most 200)")
    o.add_argument("--min-lr-ratio", type=non_negative_float, default=0.1, help="lr floor as a share of --lr")
    o.add_argument(
        "--schedule",
        choices=["cosine", "wsd"],
        default="cosine",
        help="lr decay after warmup: cosine (default) or wsd (flat, then linear over the last half)",
    )
    o.add_argument("--grad-clip", type=non_negative_float, default=1.0, help="max gradient norm; 0 = off")
    o.add_argument(
        "--fine-loss-weight",
        type=non_negative_float,
        default=0.0,
        help="weight of the fine-path-alone loss (default 0)",
    )
    r = p.add_argument_group("run")
    r.add_argument("--max-steps", type=positive_int, help="optimizer steps")
    r.add_argument("--time-budget", type=duration, help="training time, e.g. 90s, 20m, 1h (default 20m)")
    r.add_argument("--eval-every", type=positive_int, default=100, help="steps between validations")
    r.add_argument("--eval-windows", type=positive_int, default=64, help="validation windows per evaluation")
    r.add_argument("--log-every", type=positive_int, default=10, help="steps between metrics rows")
    r.add_argument("--checkpoint-every", type=positive_int, default=200, help="steps between checkpoints")
    r.add_argument("--keep-checkpoints", type=positive_int, default=3, help="checkpoints kept (default 3)")
    r.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    r.add_argument("--seed", type=int, default=0, help="seed of weights and batches")
    r.add_argument("--threads", type=positive_int, help="CPU threads per process (default: cores; 1 under torchrun)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto")
    r.add_argument("--compile", action="store_true", help="torch.compile the model (measured no gain on CPU)")
    r.add_argument("--quiet", action="store_true", help="no progress bar: one log line per evaluation")


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
        return ModelConfig.from_name(args.preset or "tiny", **overrides)
    except TypeError as exc:
        raise UserError(f"--config: {exc}") from None


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu)")
    return name


def run(args: argparse.Namespace) -> int:
    from multiscale_transformer.training.distributed import launched_by_torchrun
    from multiscale_transformer.training.trainer import Trainer, TrainSettings

    config = _config(args)
    if args.max_steps is None and args.time_budget is None:
        args.time_budget = 20 * 60.0
    if args.lr == 0:
        raise UserError("--lr must be positive")
    if args.data:
        missing = [str(p) for p in args.data if not p.exists()]
        if missing:
            raise UserError(f"--data: no such file or directory: {', '.join(missing)}")
    device = _device(args.device)
    threads = args.threads or (1 if launched_by_torchrun() and device == "cpu" else default_threads())
    settings = TrainSettings(
        out=args.out,
        config=config,
        model_name=f"AXL-{args.preset or ('custom' if args.init_from else 'tiny')}",
        data=args.data,
        glob=args.glob,
        cache_dir=args.cache_dir,
        val_fraction=args.val_fraction,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_steps=args.max_steps,
        time_budget=args.time_budget,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        min_lr_ratio=args.min_lr_ratio,
        schedule=args.schedule,
        grad_clip=args.grad_clip,
        fine_loss_weight=args.fine_loss_weight,
        eval_every=args.eval_every,
        eval_windows=args.eval_windows,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        seed=args.seed,
        threads=threads,
        device=device,
        compile=args.compile,
        resume=args.resume,
        init_from=args.init_from,
        quiet=args.quiet,
    )
    Trainer(settings).run()
    return 0
