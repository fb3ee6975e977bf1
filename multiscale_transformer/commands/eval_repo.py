"""`axl eval --repo DIR...`: per file, per repository and in total, in each mode, with CPU seconds and the
repository compressors beside (evaluation/repo.py has the protocol)."""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

from multiscale_transformer.commands.common import load_model_from_args, set_threads
from multiscale_transformer.errors import UserError

if TYPE_CHECKING:
    from multiscale_transformer.evaluation.repo import RepoResult

# Flags of the per-file evaluation that mean nothing for a repository.
_NOT_WITH_REPO = ("data", "all_files", "fim", "generation", "fine_only")


def run_repo(args: argparse.Namespace) -> int:
    from multiscale_transformer.evaluation.baselines import repository_compressors
    from multiscale_transformer.evaluation.repo import RepoOptions, RepoResult, evaluate_repository
    from multiscale_transformer.training.data import repository_documents

    for name in _NOT_WITH_REPO:
        if getattr(args, name):
            raise UserError(f"--repo scores whole repositories; it does not combine with --{name.replace('_', '-')}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    options = RepoOptions(
        stride=args.stride,
        budget=args.retrieval_budget,
        chunk_lines=args.chunk_lines,
        optimizer=args.dynamic_optimizer,
        lr=args.dynamic_lr,
        batch_size=args.batch_size,
        step_bytes=args.dynamic_step,
        step_context=args.dynamic_context,
    )
    repos = [
        (root, repository_documents(root, "evaluate")) for root in args.repo
    ]  # every bad path refused before any work
    set_threads(args.threads)
    model = load_model_from_args(args)
    context = model.config.max_seq_len
    options.check(context, modes)
    results = []
    for root, docs in repos:
        result = RepoResult(root.resolve().name, docs, evaluate_repository(model, docs, modes, options))
        if not args.no_baselines:
            result.compressors = repository_compressors([d.data for d in docs])
        results.append(result)
        if not args.json:
            _print_repo(result)
    settings = {
        "context": context,
        "modes": modes,
        "retrieval_budget_bytes": options.budget_ids(context),
        "chunk_lines": options.lines(context),
        "dynamic_optimizer": options.optimizer,
        "dynamic_lr": options.lr,
    }
    if model.config.rolling:  # dynamic evaluation steps every step_bytes (evaluation/repo.py score_rolling)
        settings |= {"dynamic_step": options.step_bytes, "dynamic_context": options.step_context}
    if args.json:
        print(
            json.dumps({**settings, "total": _total(results), "repositories": [r.to_json() for r in results]}, indent=2)
        )
    else:
        _print_total(results, settings)
    return 0


def _total(results: list[RepoResult]) -> dict[str, Any]:
    """Every repository's bytes together: bits per byte weighted by bytes, CPU seconds summed."""
    n = sum(r.bytes for r in results)
    modes = {
        m: {
            "bits_per_byte": sum(r.modes[m].bits_per_byte * r.bytes for r in results) / n,
            "cpu_seconds": sum(r.modes[m].cpu_seconds for r in results),
        }
        for m in results[0].modes
    }
    compressors = {c: sum(r.compressors[c] * r.bytes for r in results) / n for c in results[0].compressors}
    return {"bytes": n, "files": sum(len(r.files) for r in results), "modes": modes, "compressors": compressors}


def _print_repo(r: RepoResult) -> None:
    modes = list(r.modes)
    width = max(len("file"), *(len(d.name) for d in r.files), len(r.name))
    head = "  ".join(f"{m:>9}" for m in modes)
    print(f"\nrepository {r.name}: {len(r.files)} files, {r.bytes:,} bytes (bits/byte)")
    print(f"{'file':<{width}}  {'bytes':>9}  {head}")
    for i, d in enumerate(r.files):
        cells = "  ".join(f"{r.modes[m].file_bits_per_byte(i):>9.3f}" for m in modes)
        print(f"{d.name:<{width}}  {len(d.data):>9,}  {cells}")
    cells = "  ".join(f"{r.modes[m].bits_per_byte:>9.3f}" for m in modes)
    print(f"{r.name:<{width}}  {r.bytes:>9,}  {cells}")


def _print_total(results: list[RepoResult], settings: dict[str, Any]) -> None:
    total = _total(results)
    repos = f"{len(results)} repositor{'y' if len(results) == 1 else 'ies'}"
    print(
        f"\n{repos}, {total['files']} files, {total['bytes']:,} bytes; context "
        f"{settings['context']}; retrieval: {settings['retrieval_budget_bytes']} bytes of chunks of "
        f"{settings['chunk_lines']} lines; dynamic: {settings['dynamic_optimizer']}, lr {settings['dynamic_lr']:g}\n"
    )
    width = max([len("mode"), *(len(c) for c in total["compressors"])])
    modes = total["modes"]
    alone = modes.get("alone")
    print(f"{'mode':<{width}}  " + "  ".join(f"{r.name[:12]:>12}" for r in results) + "         all   CPU s  vs alone")
    for m, row in modes.items():
        cells = "  ".join(f"{r.modes[m].bits_per_byte:>12.3f}" for r in results)
        gain = "" if alone is None or m == "alone" else _gain(row, alone)
        print(f"{m:<{width}}  {cells}  {row['bits_per_byte']:>10.3f}  {row['cpu_seconds']:>6.0f}  {gain}")
    for c, bpb in total["compressors"].items():
        cells = "  ".join(f"{r.compressors[c]:>12.3f}" for r in results)
        print(f"{c:<{width}}  {cells}  {bpb:>10.3f}")


def _gain(row: dict[str, float], alone: dict[str, float]) -> str:
    """Bits per byte saved against `alone`, and per extra CPU minute (what adaptation must pay for)."""
    saved = alone["bits_per_byte"] - row["bits_per_byte"]
    extra = (row["cpu_seconds"] - alone["cpu_seconds"]) / 60
    per_minute = f", {saved / extra:+.3f} per extra CPU-minute" if extra > 0 and math.isfinite(saved) else ""
    return f"{saved:+.3f}{per_minute}"
