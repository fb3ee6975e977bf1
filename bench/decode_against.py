"""Decoding speed of this tree against another commit's, interleaved in one process.

Two runs of bench/generate.py in turn see this machine's noise differently (neighbours, memory
bandwidth, frequency); here both trees' decoders run in the same process, alternating every
round, so drift hits them alike. The other commit's package is exported with `git archive` and
imported under another name.

    python bench/decode_against.py --base HEAD~1                       # the bundled model, 1 thread
    python bench/decode_against.py --base 0be25df --rounds 40 --new 200

Prints each tree's best and median bytes/s over the rounds and their ratio. Not a test.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the axl command sets it; see cli.py

import torch

PACKAGE = "multiscale_transformer"
MODEL = Path(__file__).resolve().parents[1] / PACKAGE / "pretrained" / "axl-mini"


def import_commit(rev: str, into: Path) -> str:
    """The package as it is at `rev`, importable as multiscale_transformer_<hash>: its name."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    name = f"{PACKAGE}_{sha}"
    archive = subprocess.run(["git", "archive", rev, PACKAGE], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / PACKAGE).rename(into / name)
    for path in (into / name).rglob("*.py"):  # its own imports point at itself
        text = path.read_text(encoding="utf-8")
        path.write_text(re.sub(rf"\b{PACKAGE}\b", name, text), encoding="utf-8")
    sys.path.insert(0, str(into))
    return name


def decoder_loop(package: str, prompt: list[int], new: int):
    """A function that decodes `new` bytes after `prompt` with `package`'s cached decoder: bytes/s."""
    model_cls = importlib.import_module(f"{package}.model.model").MultiScaleTransformer
    new_decoder = importlib.import_module(f"{package}.generation.generate").new_decoder
    model = model_cls.from_pretrained(MODEL)
    decoder = new_decoder(model, 1)
    ids = [torch.tensor([b]) for b in (prompt * (new // len(prompt) + 1))[:new]]
    active = torch.tensor([True])

    def run() -> float:
        decoder.prefill_row(0, prompt)
        start = time.perf_counter()
        for byte in ids:
            decoder.step(byte, active)
        return new / (time.perf_counter() - start)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD~1", help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--new", type=int, default=128, help="bytes decoded per round (the prompt + these fit the window)"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompt = list(b"def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1)\n")
    with tempfile.TemporaryDirectory() as tmp:  # models load outside inference mode, as users load them
        runs = {"this tree": decoder_loop(PACKAGE, prompt, args.new)}
        runs[args.base] = decoder_loop(import_commit(args.base, Path(tmp)), prompt, args.new)
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for i in range(args.rounds):  # which tree goes first alternates too
            for name, run in list(runs.items())[:: 1 if i % 2 else -1]:
                rates[name].append(run())
    print(
        f"bundled model, batch 1, {args.threads} thread(s), {args.new} bytes after a {len(prompt)}-byte prompt, "
        f"{args.rounds} interleaved rounds"
    )
    for name, values in rates.items():
        print(f"  {name:<12} best {max(values):7.1f} bytes/s   median {statistics.median(values):7.1f} bytes/s")
    ours, theirs = rates["this tree"], rates[args.base]
    print(
        f"  ratio (this tree / {args.base}): best {max(ours) / max(theirs):.3f}   "
        f"median {statistics.median(ours) / statistics.median(theirs):.3f}"
    )


if __name__ == "__main__":
    main()
