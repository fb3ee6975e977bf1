"""`axl eval`: bits per byte on held-out files next to compressors on the same bytes; generation probe."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multiscale_transformer.commands.common import (
    add_model_arguments,
    add_threads_argument,
    fraction,
    load_model_from_args,
    positive_float,
    positive_int,
    set_threads,
)
from multiscale_transformer.errors import UserError

if TYPE_CHECKING:
    from multiscale_transformer.evaluation.baselines import Baselines
    from multiscale_transformer.evaluation.bpb import EvalResult


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    d = p.add_argument_group("data (the same inputs and split as axl train)")
    d.add_argument(
        "--data", nargs="+", action="extend", type=Path, help="directories, files, .jsonl, .txt (default: stdlib)"
    )
    d.add_argument("--glob", default="*.py", help="file-name pattern inside --data directories (default *.py)")
    d.add_argument("--val-fraction", type=fraction, default=0.05, help="held-out share, as in training (0.05)")
    d.add_argument("--all-files", action="store_true", help="score every file, not only the validation split")
    p.add_argument("--stride", type=positive_int, help="bytes scored per window (default: half the context)")
    p.add_argument("--fine-only", action="store_true", help="score the fine path alone (what GGUF exports)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="windows per forward pass (default 16)")
    p.add_argument("--no-baselines", action="store_true", help="skip the compressor table")
    p.add_argument("--generation", action="store_true", help="also run the generation probe (greedy and sampled)")
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="probe completion limit (default 256)")
    p.add_argument(
        "--fim",
        action="store_true",
        help="instead of whole files: hide lines and blocks, score and infill them (docs/editors.md)",
    )
    p.add_argument("--fim-holes", type=positive_int, default=100, help="holes of each kind for --fim (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled probe and of --fim's holes")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    add_repo_arguments(p)
    add_threads_argument(p)


# evaluation/repo.py's MODES and OPTIMIZERS, spelled out so that building the parser imports no torch
# (RepoOptions.check refuses anything else in one line).
REPO_MODES = "alone,retrieval,dynamic,both,match,dynamic+match"


def add_repo_arguments(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("repository mode (docs/evaluation.md): each file with the rest of its repository")
    r.add_argument(
        "--repo", nargs="+", action="extend", type=Path, metavar="DIR", help="score every .py file of each repository"
    )
    r.add_argument("--modes", default=REPO_MODES, help=f"comma-separated, of {REPO_MODES} (default: all)")
    r.add_argument(
        "--retrieval-budget", type=fraction, default=0.5, help="share of the context for other files' chunks (0.5)"
    )
    r.add_argument(
        "--chunk-lines", type=positive_int, help="lines per chunk (default 32, fewer if the budget is small)"
    )
    r.add_argument(
        "--dynamic-optimizer", choices=("sgd", "adam"), default="adam", help="dynamic evaluation's optimizer"
    )
    r.add_argument("--dynamic-lr", type=positive_float, default=3e-4, help="dynamic evaluation's learning rate (3e-4)")
    r.add_argument(
        "--dynamic-step",
        type=positive_int,
        default=256,
        help="a model that reads any length (every attention windowed): bytes scored between steps (256)",
    )
    r.add_argument(
        "--dynamic-context", type=positive_int, default=1024, help="... and the bytes each step reads (1024)"
    )


def run(args: argparse.Namespace) -> int:
    from multiscale_transformer.evaluation.bands import compressor_bands
    from multiscale_transformer.evaluation.baselines import compressor_baselines
    from multiscale_transformer.evaluation.bpb import evaluate_documents, held_out_documents
    from multiscale_transformer.evaluation.probes import MODES, run_probe
    from multiscale_transformer.training.data import check_sources

    if args.repo:
        from multiscale_transformer.commands.eval_repo import run_repo

        return run_repo(args)
    if args.data:
        check_sources(args.data)
    set_threads(args.threads)
    model = load_model_from_args(args)
    context = model.config.max_seq_len
    if args.stride is not None and args.stride > context:
        raise UserError(f"--stride must be at most the model's context ({context}), got {args.stride}")
    docs, skipped = held_out_documents(args.data, args.glob, args.val_fraction, args.all_files)
    if args.fim:
        return _run_fim(model, docs, args)
    result = evaluate_documents(model, docs, args.stride, args.fine_only, args.batch_size, progress=not args.json)
    baselines = None if args.no_baselines else compressor_baselines([d.data for d in docs])
    bands = None if args.no_baselines else compressor_bands([d.data for d in docs])
    probes = [run_probe(model, mode, args.max_new_tokens, args.seed) for mode in MODES] if args.generation else []

    if args.json:
        out: dict[str, Any] = result.to_json()
        out["skipped_files"] = dict(skipped.counts)
        if baselines is not None:
            out["baselines"] = baselines.to_json()
            out["baselines_by_position"] = bands
        if probes:
            out["generation"] = {p.mode: p.to_json() for p in probes}
        print(json.dumps(out, indent=2))
        return 0
    _print_tables(result, baselines, bands)
    if skipped.total:
        print(f"files skipped while reading the data (not scored): {skipped.summary()}")
    for p in probes:
        print(
            f"generation ({p.mode}): {p.parse_rate:.0%} of {len(p.completions)} functions parse, "
            f"{p.finished_rate:.0%} ended within {args.max_new_tokens} bytes, "
            f"mean completion {p.mean_length:.0f} bytes"
        )
    return 0


def _print_tables(result: EvalResult, baselines: Baselines | None, bands: dict[str, list] | None) -> None:
    width = max(len(f.name) for f in result.files)
    print(f"{'file':<{width}}  {'bytes':>9}  bits/byte")
    for f in result.files:
        print(f"{f.name:<{width}}  {f.bytes:>9,}  {f.bits_per_byte:.3f}")
    path = "fine path alone" if result.fine_only else "full model"
    print(
        f"\n{len(result.files)} files, {result.bytes:,} bytes, context {result.context}, stride {result.stride} "
        f"({path})\n"
    )
    rows = [("this model", result.bits_per_byte)] + (baselines.rows() if baselines else [])
    label = max(len(r[0]) for r in rows)
    print(f"{'':<{label}}  bits/byte")
    for name, bpb in rows:
        print(f"{name:<{label}}  {bpb:.3f}")
    model_bands = [b for b in result.by_position() if b["bytes"]]
    print("\nby position in the file (bytes in), bits/byte:")
    print(f"  {'this model':<{label}}  " + "  ".join(f"{b['band']} {b['bits_per_byte']:.3f}" for b in model_bands))
    for name, values in (bands or {}).items():
        cells = [f"{b['band']} {values[i]:.3f}" for i, b in enumerate(result.by_position()) if b["bytes"]]
        print(f"  {name + ', each file alone':<{label}}  " + "  ".join(cells))
    print(f"\nloss {result.loss:.4f} nats/byte, byte perplexity {result.perplexity:.3f}", file=sys.stdout)


def _run_fim(model: Any, docs: list, args: argparse.Namespace) -> int:
    from multiscale_transformer.evaluation.infilling import evaluate_infilling, make_holes

    holes = make_holes(docs, args.fim_holes, model.config.max_seq_len, args.seed)
    report = evaluate_infilling(model, holes)
    if args.json:
        print(json.dumps({"fim": report.to_json()}, indent=2))
        return 0
    trained = "trained with FIM" if report.fim_trained else "not trained with FIM: prefix-only numbers only"
    print(f"fill-in-the-middle on {len(docs)} held-out files, seed {args.seed} ({trained})\n")
    print(
        f"{'hidden span':<12}  {'holes':>5}  {'bytes':>6}  {'long prefix':>11}  {'prefix only':>11}  "
        f"{'prefix+suffix':>13}  (bits/byte)"
    )
    for kind, s in report.kinds.items():
        row = s.to_json()
        both = row.get("prefix_and_suffix_bits_per_byte")
        shown = f"{both:>13.3f}" if both is not None else f"{'-':>13}"
        print(
            f"{kind:<12}  {s.holes:>5}  {s.middle_bytes:>6}  {row['long_prefix_only_bits_per_byte']:>11.3f}  "
            f"{row['prefix_only_bits_per_byte']:>11.3f}  {shown}"
        )
    exact = report.exact_match
    if exact:
        print(f"\nsingle-line exact match, greedy from the prefix only: {exact['prefix_only']:.0%}")
    labels = {"greedy": "greedy", "editor": "llama.vscode/llama.vim samplers (top-k 40, top-p 0.99, infill)"}
    for name, ended in report.ended.items():
        key = "prefix_and_suffix" if name == "greedy" else f"prefix_and_suffix_{name}"
        print(
            f"single-line infills with the suffix, {labels[name]}: {exact[key]:.0%} exact, "
            f"{ended['by_eos_or_stop_rule']:.0%} ended before the cap (by EOS {ended['by_eos']:.0%}; "
            f"stop rules: the suffix's next line, a repeated line, n_indent), "
            f"{ended['mean_bytes']:.0f} bytes on average"
        )
    return 0
