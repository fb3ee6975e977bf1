"""`axl audit`: check a checkpoint for future-byte leaks empirically; PASS (exit 0) or FAIL (exit 1)."""

from __future__ import annotations

import argparse
import json

from multiscale_transformer.commands.common import (
    add_model_arguments,
    add_threads_argument,
    load_model_from_args,
    non_negative_float,
    positive_int,
    set_threads,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--cuts", type=positive_int, default=8, help="random cut positions per length (default 8)")
    p.add_argument("--batch", type=positive_int, default=3, help="sequences per check (default 3)")
    p.add_argument("--tolerance", type=non_negative_float, default=0.0, help="largest change allowed (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random bytes and cuts")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_threads_argument(p)


def run(args: argparse.Namespace) -> int:
    from multiscale_transformer.evaluation.audit import audit_model

    set_threads(args.threads)
    model = load_model_from_args(args)
    report = audit_model(model, args.cuts, args.batch, tolerance=args.tolerance, seed=args.seed)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for c in report.checks:
            where = f"position {c.leak.position} of {c.leak.length}" if c.leak.magnitude else "none"
            print(f"{c.name:<17} max change {c.leak.magnitude:.3g}  ({where})")
        worst = report.worst
        verdict = "PASS" if report.passed else "FAIL"
        detail = (
            "no future byte changed any logit"
            if worst.leak.magnitude == 0
            else f"worst leak: {worst.name} at position {worst.leak.position} (sequence length {worst.leak.length}), "
            f"magnitude {worst.leak.magnitude:.3g}"
        )
        print(f"{verdict}: {detail}")
    return 0 if report.passed else 1
