"""`axl corpus`: build the training corpus of pinned PyPI packages (training/pypi_corpus.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="directory for packages.jsonl and manifest.json")
    p.add_argument(
        "--packages",
        type=Path,
        help="file of NAME==VERSION lines (default: the pinned list in training/pypi_corpus.py)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "axl" / "sdists",
        help="where downloaded sdists are kept and reused (default ~/.cache/axl/sdists)",
    )


def run(args: argparse.Namespace) -> int:
    from multiscale_transformer.training import pypi_corpus

    specs = pypi_corpus.read_package_list(args.packages) if args.packages else list(pypi_corpus.PACKAGES)
    manifest = pypi_corpus.build(specs, args.out, args.cache)
    for p in manifest["packages"]:
        spec = f"{p['package']}=={p['version']}"
        left_out = sum(p["skipped"].values())
        print(f"{spec:<30} {p['files']:>5} files {p['bytes'] / 1e6:6.2f} MB  {left_out:>3} left out  {p['license']}")
    jsonl = args.out / manifest["jsonl"]
    print(f"{manifest['files']} files, {manifest['bytes'] / 1e6:.1f} MB -> {jsonl}")
    print(f"train on it with the stdlib: axl train --data stdlib --data {jsonl}")
    return 0
