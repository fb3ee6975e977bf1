"""`axl train` with the issue-12 recipe options: Muon + AdamW groups and the warmup-stable-decay schedule."""

from pathlib import Path

import pytest
import torch

from multiscale_transformer.training.schedule import wsd_lr_at

from .test_data import small_corpus
from .test_train import axl_train, rows


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_corpus(tmp_path_factory.mktemp("corpus"), n=30)


def test_muon_with_wsd_trains_checkpoints_and_resumes(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = ("--optimizer", "muon", "--schedule", "wsd", "--warmup", "2", "--checkpoint-every", "4")
    done = axl_train(src, out, *run, "--max-steps", "8", "--eval-every", "8")
    assert done.returncode == 0, done.stderr
    lr = [r["lr"] for r in rows(out) if "loss" in r]
    assert lr == pytest.approx([wsd_lr_at(s, 1e-2, 2, 8, 0.1) for s in range(8)])
    losses = [r["loss"] for r in rows(out) if "loss" in r]
    assert losses[-1] < losses[0]
    ckpt = torch.load(sorted((out / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)
    assert ckpt["schedule"]["kind"] == "wsd" and ckpt["optimizer"]["param_groups"][0]["use_muon"]

    # A longer resumed run keeps the checkpoint's schedule kind and continues the step counter.
    more = axl_train(src, out, *run, "--max-steps", "10", "--eval-every", "10", "--resume")
    assert more.returncode == 0, more.stderr
    lr = [r["lr"] for r in rows(out) if "loss" in r]
    assert lr[8:] == pytest.approx([wsd_lr_at(s, 1e-2, 2, 10, 0.1) for s in (8, 9)])
    results = (out / "results.json").read_text()
    assert '"optimizer": "Muon+AdamW"' in results


def test_resuming_with_another_optimizer_is_refused_with_the_flag_to_use(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = axl_train(src, out, "--optimizer", "lion", "--max-steps", "4", "--checkpoint-every", "2")
    assert first.returncode == 0, first.stderr
    again = axl_train(src, out, "--optimizer", "muon", "--max-steps", "6", "--resume")
    assert again.returncode != 0
    assert "resume it with --optimizer lion" in again.stderr and "Traceback" not in again.stderr
    same = axl_train(src, out, "--optimizer", "lion", "--max-steps", "6", "--resume")
    assert same.returncode == 0, same.stderr
