"""The `axl` command: a thin dispatcher; each subcommand lives in multiscale_transformer/commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from multiscale_transformer.errors import UserError

# name -> (module under multiscale_transformer.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("info", "parameters and configuration of a preset or a model"),
    "generate": ("generate", "complete a prompt, streaming bytes as they are produced"),
    "serve": ("serve", "OpenAI-compatible HTTP server (completions, chat, models, health)"),
    "train": ("train", "train a model on Python code (default: the standard library)"),
    "corpus": ("corpus", "build a training corpus of pinned PyPI packages, with a manifest"),
    "adapt": ("adapt", "fine-tune a model on one repository for a few minutes (repository memory)"),
    "export-gguf": ("export_gguf", "the fine-scale path as a GGUF file for llama.cpp, Ollama and LM Studio"),
    "eval": ("eval", "bits per byte on held-out files next to compressors; generation probe"),
    "audit": ("audit", "check a model for future-byte leaks: PASS (exit 0) or FAIL (exit 1)"),
    "card": ("card", "write a model card (README.md) for a model directory, every number measured"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="axl", description="AXL multi-scale byte-level transformer for Python code")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"multiscale_transformer.commands.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP threads that spin while waiting for a descheduled sibling make torch up to 10-30x slower
    # on a busy machine (measured: training tiny, 2 threads, load 8: 974 B/s spinning, 6,156 passive;
    # cached decoding, load 5: 14.6 vs 355 bytes/s). Read once when torch loads, so it is set before
    # any command imports torch; an explicit value in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserError as exc:
        print(f"axl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"axl {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
