"""The published perplexities explained: a leaky multi-scale model vs the causal one, same data, budget, seed.

    python bench/leaky_experiment.py --budget 3m --out /tmp/axl-leaky     # equal time
    python bench/leaky_experiment.py --steps 500 --out /tmp/axl-leaky     # equal steps, i.e. equal data and compute

The leaky variant pools bytes jk .. jk+k-1 into coarse token j without the causal shift (tests/leaky.py),
so byte t reads a token that already contains bytes t+1 .. up to the token's end: what a 2x/4x model
built without the shift computes. Both models start from identical weights (same seed; the leaky twin
copies the causal pooling weights) and see the same batches for the same time. Both are then scored
by `axl eval`'s evaluator on the held-out split and checked by `axl audit`'s `audit_model`. The leaky
weights are also scored by the causal class (what `from_pretrained` builds): without the leak, what
did it learn? The variant exists only in tests/ and here; it is never a user option.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from multiscale_transformer.commands.train import duration
from multiscale_transformer.evaluation.audit import audit_model
from multiscale_transformer.evaluation.bpb import evaluate_documents, validation_documents
from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.training.data import Document
from multiscale_transformer.training.optim import build_optimizer
from multiscale_transformer.training.tokenizer import EOS_ID
from multiscale_transformer.training.trainer import LossModule, Trainer, TrainSettings

# The leaky variant lives in the test suite (never in the package): make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.leaky import make_leaky


class LeakyTrainer(Trainer):
    """The ordinary training loop on the leaky twin of the freshly initialised model."""

    def _prepare(self) -> None:
        super()._prepare()
        s = self.s
        make_leaky(self.model)  # same weights, unshifted pooling; the optimizer must see the new modules
        self.optimizer = build_optimizer(self.model, s.optimizer, s.lr, s.weight_decay)
        self.base_lr = self.optimizer.param_groups[0]["lr"]
        self.loss_module = self.raw_loss_module = LossModule(self.model, s.fine_loss_weight)


@torch.no_grad()
def bits_by_phase(model: MultiScaleTransformer, docs: list[Document], windows: int = 64) -> list[float]:
    """Bits per byte of the prediction made at input position i, grouped by i mod 4, over full windows
    cut from the start of each file. Position i reads coarse token i // 4, which (without the shift)
    holds bytes up to 4 * (i // 4) + 3: the target i + 1 is inside it unless i % 4 == 3."""
    T = model.config.max_seq_len
    rows = [torch.tensor([EOS_ID, *d.data[:T]]) for d in docs if len(d.data) >= T][:windows]
    ids = torch.stack(rows)  # (N, T + 1)
    logits = model(ids[:, :-1]).float()  # (N, T, V)
    nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (N, T)
    phase = torch.arange(T) % 4
    return [float(nll[:, phase == r].mean()) / math.log(2) for r in range(4)]


def train(out: Path, leaky: bool, args: argparse.Namespace) -> dict:
    if not (out / "results.json").exists():
        name = "leaky" if leaky else "causal"
        print(
            f"{name}: training {args.steps or args.budget} {'steps' if args.steps else 's'} into {out}", file=sys.stderr
        )
        settings = TrainSettings(
            out=out,
            fim_rate=0.0,  # as the documented runs, made before FIM training existed
            config=ModelConfig.from_name(args.preset),
            model_name=f"{name}-{args.preset}",
            data=args.data,
            time_budget=None if args.steps else args.budget,
            max_steps=args.steps,
            seed=args.seed,
            threads=args.threads,
            quiet=True,
        )
        (LeakyTrainer if leaky else Trainer)(settings).run()
    return json.loads((out / "results.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--budget", type=duration, default=180.0, help="training time per model (default 3m)")
    p.add_argument("--steps", type=int, help="optimizer steps per model instead of a time budget (equal data)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", nargs="+", type=Path, help="training inputs (default: the standard library)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stride", type=int, help="evaluation stride (default: half the context)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    results = {"causal": train(args.out / "causal", False, args), "leaky": train(args.out / "leaky", True, args)}
    docs = validation_documents(args.data)
    causal = MultiScaleTransformer.from_pretrained(args.out / "causal")
    leaky_weights_causal = MultiScaleTransformer.from_pretrained(args.out / "leaky")
    leaky = make_leaky(MultiScaleTransformer.from_pretrained(args.out / "leaky"))
    # The fine path never reads the pooled scales, so the leaky weights' fine path is causal either way.
    fine = {
        "causal": evaluate_documents(causal, docs, args.stride, fine_only=True, progress=True),
        "leaky": evaluate_documents(leaky, docs, args.stride, fine_only=True, progress=True),
    }
    rows = [
        ("causal (ours)", causal, "causal"),
        ("leaky (no shift before pooling)", leaky, "leaky"),
        ("leaky weights, run causally", leaky_weights_causal, "leaky"),
    ]
    table = []
    for name, model, run in rows:
        ev = evaluate_documents(model, docs, args.stride, progress=True)
        report = audit_model(model)
        worst = report.worst
        verdict = "PASS" if report.passed else f"FAIL ({worst.name}, position {worst.leak.position}, "
        verdict += "" if report.passed else f"{worst.leak.magnitude:.3g})"
        steps = results[run]["training_results"]["steps"]
        table.append(
            f"| {name} | {steps:,} | {ev.bits_per_byte:.3f} | {ev.perplexity:.3f} | "
            f"{fine[run].bits_per_byte:.3f} | {verdict} |"
        )
    stride = args.stride or causal.config.max_seq_len // 2
    budget = f"{args.steps} steps" if args.steps else f"{args.budget:.0f}s"
    print(f"\nbudget {budget} per model, preset {args.preset}, seed {args.seed}, {args.threads} thread(s)")
    print(f"held-out: {sum(len(d.data) for d in docs):,} bytes in {len(docs)} files, eval stride {stride}\n")
    print("| model | steps | bits/byte | byte perplexity | fine path bits/byte | axl audit (worst leak) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(table))
    print("\nbits per byte by position in the 4-byte pooling group (input position i predicts byte i + 1):\n")
    print("| model | i % 4 = 0 | 1 | 2 | 3 (no future byte in the token) |")
    print("|---|---|---|---|---|")
    for name, model, _ in rows:
        print(f"| {name} | " + " | ".join(f"{b:.3f}" for b in bits_by_phase(model, docs)) + " |")


if __name__ == "__main__":
    main()
