"""Multi-scale vs its single-scale baseline of equal parameters: same data, time budget and seed.

    python bench/compare.py --budget 20m --out /tmp/axl-compare-20m     # the issue's budget (~45 min)
    python bench/compare.py --budget 2m --out /tmp/axl-compare-2m       # a quick look

Trains `--preset` (default tiny, 0.52M parameters: see docs/evaluation.md for why) and
`ModelConfig.from_name(preset).flat()` one after the other with `--threads` each (default 1), then
scores both with `axl eval`'s evaluator on the same held-out bytes (the validation split of the
training corpus) next to the compressors, and prints both bits per byte and their ratio.
A run whose directory already holds results.json is reused, so an interrupted comparison resumes
at the next model and `--eval-only` re-scores without training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from multiscale_transformer.commands.train import duration
from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.training.trainer import Trainer, TrainSettings


def train(out: Path, config: ModelConfig, name: str, args: argparse.Namespace) -> dict:
    if (out / "results.json").exists():
        print(f"{name}: reusing {out}", file=sys.stderr)
    elif args.eval_only:
        raise SystemExit(f"{out}: no results.json; run without --eval-only first")
    else:
        print(f"{name}: training {args.budget:.0f}s into {out}", file=sys.stderr)
        settings = TrainSettings(
            out=out,
            fim_rate=0.0,  # as the documented runs, made before FIM training existed
            config=config,
            model_name=name,
            data=args.data,
            time_budget=args.budget,
            seed=args.seed,
            threads=args.threads,
            batch_size=args.batch_size,
            quiet=True,
        )
        Trainer(settings).run()
    return json.loads((out / "results.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--budget", type=duration, default=20 * 60.0, help="training time per model (default 20m)")
    p.add_argument("--out", type=Path, required=True, help="directory for the two models")
    p.add_argument("--data", nargs="+", type=Path, help="training inputs (default: the standard library)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--stride", type=int, help="evaluation stride (default: half the context)")
    p.add_argument("--eval-only", action="store_true", help="score existing runs, train nothing")
    p.add_argument("--train-only", action="store_true", help="train the two models, score nothing")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    multi = ModelConfig.from_name(args.preset)
    runs = {"multi-scale": (multi, args.out / "multi"), "single-scale": (multi.flat(), args.out / "flat")}
    results = {name: train(out, cfg, name, args) for name, (cfg, out) in runs.items()}
    if args.train_only:
        return

    from multiscale_transformer.evaluation.baselines import compressor_baselines
    from multiscale_transformer.evaluation.bpb import evaluate_documents, validation_documents

    docs = validation_documents(args.data)
    rows = []
    for name, (_, out) in runs.items():
        model = MultiScaleTransformer.from_pretrained(out).eval()
        t0 = time.perf_counter()
        ev = evaluate_documents(model, docs, stride=args.stride, progress=True)
        tr = results[name]["training_results"]
        rows.append((name, model.num_parameters(), tr["steps"], results[name]["bytes_seen"], ev.bits_per_byte))
        print(f"{name}: {ev.bits_per_byte:.4f} bits/byte (scored in {time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    base = compressor_baselines([d.data for d in docs])

    print(f"\nbudget {args.budget:.0f}s per model, preset {args.preset}, seed {args.seed}, {args.threads} thread(s)")
    print(f"held-out bytes: {sum(len(d.data) for d in docs):,} in {len(docs)} files\n")
    print("| model | parameters | steps | bytes trained | bits/byte |")
    print("|---|---|---|---|---|")
    for name, params, steps, seen, bpb in rows:
        print(f"| {name} | {params:,} | {steps:,} | {seen:,} | {bpb:.3f} |")
    for label, bpb in base.rows():
        print(f"| {label} | – | – | – | {bpb:.3f} |")
    ratio = rows[0][4] / rows[1][4]
    print(f"\nmulti-scale / single-scale bits per byte: {ratio:.3f}")


if __name__ == "__main__":
    main()
