"""axl audit: passes on our models, fails (with the worst leak located) on a deliberately leaky variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from multiscale_transformer.cli import main
from multiscale_transformer.commands import audit as audit_command
from multiscale_transformer.evaluation.audit import audit_lengths, audit_model
from multiscale_transformer.model.model import MultiScaleTransformer

from .conftest import FEATURES, OPTIONS, make_model
from .leaky import make_leaky


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def leaky_dir(tmp_path: Path) -> Path:
    """The weights of a leaky model, saved like any checkpoint (the file format cannot say it leaks)."""
    model = make_leaky(make_model("tiny", seed=5, max_seq_len=32))
    model.save_pretrained(tmp_path / "leaky")
    return tmp_path / "leaky"


def test_audit_lengths_cover_every_residue_and_the_full_context() -> None:
    lengths = audit_lengths(128)
    assert {n % 4 for n in lengths} == {0, 1, 2, 3}
    assert 128 in lengths and min(lengths) == 1


@pytest.mark.parametrize(
    "overrides", [{}, FEATURES, {"downsample_factors": [1, 3, 8], "max_seq_len": 40}, *OPTIONS.values()]
)
def test_our_models_pass(overrides: dict) -> None:
    report = audit_model(make_model("tiny", seed=2, **overrides), cuts_per_length=4)
    assert report.passed
    assert report.worst.leak.magnitude == 0.0
    assert {c.name for c in report.checks} >= {"logits", "fine-path logits"}


def test_leaky_weights_fail_through_audit_model(leaky_dir: Path) -> None:
    loaded = MultiScaleTransformer.from_pretrained(leaky_dir)
    assert audit_model(loaded).passed, "loading builds the causal class, so the same weights are causal"
    report = audit_model(make_leaky(loaded))
    assert not report.passed
    worst = report.worst
    assert worst.leak.magnitude > 1e-4
    assert 0 <= worst.leak.position < worst.leak.length - 1
    assert any(c.name.startswith("gradient") and c.leak.magnitude > 0 for c in report.checks)
    fine = next(c for c in report.checks if c.name == "fine-path logits")
    assert fine.leak.magnitude == 0.0, "the leak is in pooling: the fine path alone stays causal"


def test_audit_cli_passes_on_a_saved_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_model("tiny", seed=1, max_seq_len=32).save_pretrained(tmp_path / "ours")
    assert main(["audit", "--model", str(tmp_path / "ours"), "--threads", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("PASS")


def test_audit_cli_fails_with_exit_1_on_the_leaky_variant(
    leaky_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI loads with the causal class; hand it the leaky module the way a foreign loader would.
    def load_leaky(args: object) -> MultiScaleTransformer:
        return make_leaky(MultiScaleTransformer.from_pretrained(leaky_dir))

    monkeypatch.setattr(audit_command, "load_model_from_args", load_leaky)
    assert main(["audit", "--model", str(leaky_dir), "--threads", "1"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("FAIL: worst leak:") and "position" in last
    assert main(["audit", "--model", str(leaky_dir), "--threads", "1", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is False and report["worst"]["magnitude"] > 0


def test_audit_cli_bad_model_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--model", "/nonexistent/model"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
