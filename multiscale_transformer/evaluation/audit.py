"""`audit_model`: an empirical future-byte leak check of any model, on top of evaluation/causality.py.

It needs nothing but the forward pass, so it judges a checkpoint by what it computes, not by how its
code claims to work: change every byte after position t and require the logits at 0..t to stay exactly
equal (many t, many lengths including every residue mod 4 and the full context, batch > 1), for the full
model and the fine path alone; then require exactly zero gradient from later byte embeddings into
logit t. Any non-zero difference is a leak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from multiscale_transformer.evaluation.causality import Leak, gradient_leak, perturbation_leak
from multiscale_transformer.model.model import MultiScaleTransformer


@dataclass(frozen=True)
class Check:
    name: str
    leak: Leak


@dataclass(frozen=True)
class AuditReport:
    checks: list[Check] = field(default_factory=list)
    tolerance: float = 0.0

    @property
    def worst(self) -> Check:
        """The largest leak, preferring changed logits (a direct, interpretable measure) over gradients,
        whose magnitude is in different units."""
        logits = [c for c in self.checks if c.leak.kind == "logits" and c.leak.magnitude > self.tolerance]
        return max(logits or self.checks, key=lambda c: c.leak.magnitude)

    @property
    def passed(self) -> bool:
        return self.worst.leak.magnitude <= self.tolerance

    def to_json(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "tolerance": self.tolerance,
            "worst": _leak_json(self.worst),
            "checks": [_leak_json(c) for c in self.checks],
        }


def _leak_json(check: Check) -> dict[str, object]:
    leak = check.leak
    return {"check": check.name, "magnitude": leak.magnitude, "position": leak.position, "length": leak.length}


def audit_lengths(context: int) -> list[int]:
    """Every length 1..9 (all residues of the 2x/4x pooling), a few odd ones, and the full context."""
    lengths = set(range(1, min(context, 9) + 1)) | {context, max(1, context - 1), max(1, context // 2 + 3)}
    return sorted(n for n in lengths if 1 <= n <= context)


def audit_model(
    model: MultiScaleTransformer,
    cuts_per_length: int = 8,
    batch: int = 3,
    gradient_positions: int = 8,
    tolerance: float = 0.0,
    seed: int = 0,
) -> AuditReport:
    """Run the perturbation checks (full model, fine path) and the gradient check; see the module docstring.

    Takes the model object, not a path: a loaded checkpoint, or any module with the same interface
    (the tests audit a deliberately leaky variant through this entry).
    """
    was_training = model.training
    model.eval()  # dropout would make two identical inputs differ
    T = model.config.max_seq_len
    vocab = model.config.vocab_size
    lengths = audit_lengths(T)
    checks = []
    with torch.no_grad():
        checks.append(Check("logits", perturbation_leak(model, vocab, lengths, cuts_per_length, batch, seed)))
        fine = perturbation_leak(lambda x: model(x, fine_only=True), vocab, lengths, cuts_per_length, batch, seed)
        checks.append(Check("fine-path logits", fine))
    grad_lengths = sorted({min(T, 13), T})
    for n in grad_lengths:
        step = max(1, (n - 1) // gradient_positions)
        checks.append(Check(f"gradient (T={n})", gradient_leak(model, model.tok_emb, n, range(0, n - 1, step), seed)))
    model.train(was_training)
    return AuditReport(checks, tolerance)
