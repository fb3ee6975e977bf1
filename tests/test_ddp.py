"""torchrun with 2 CPU processes: the ranks hold one model, and it is the model one process trains on
the same batches (2 ranks x --grad-accum 1 read what 1 process x --grad-accum 2 reads)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multiscale_transformer.model.model import MultiScaleTransformer

from .test_data import small_corpus

STEPS = 4
# The same sums in another order (gloo's all-reduce against accumulation in one process): float32
# rounding, measured at most 1e-7 after 4 steps; one step of lr 1e-2 moves weights by ~1e-2.
TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_flags(src: Path, out: Path, cache: Path, grad_accum: int) -> list[str]:
    return [
        "--data", str(src), "--out", str(out), "--cache-dir", str(cache), "--preset", "tiny", "--context", "32",
        "--batch-size", "2", "--grad-accum", str(grad_accum), "--max-steps", str(STEPS), "--eval-every", "2",
        "--eval-windows", "4", "--log-every", "1", "--checkpoint-every", "2", "--device", "cpu", "--quiet",
    ]  # fmt: skip


def test_torchrun_two_cpu_processes_train_the_one_process_model(tmp_path: Path) -> None:
    src = small_corpus(tmp_path, n=20)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    worker = str(Path(__file__).with_name("ddp_worker.py"))
    flags = train_flags(src, out, tmp_path / "cache", grad_accum=1)
    result = subprocess.run([*launcher, worker, *flags], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    single = tmp_path / "single"
    flags = [*train_flags(src, single, tmp_path / "cache", grad_accum=2), "--threads", "1"]
    one = subprocess.run([sys.executable, "-m", "multiscale_transformer", "train", *flags], capture_output=True,
                         text=True, timeout=300, env=env)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]

    ranks = [load_file(out / f"rank{r}.safetensors") for r in (0, 1)]
    trained = MultiScaleTransformer.from_pretrained(single)
    reference = trained.state_dict()
    torch.manual_seed(0)  # the runs' --seed: the weights they started from
    start = MultiScaleTransformer(trained.config).state_dict()
    assert set(ranks[0]) == set(ranks[1]) == set(reference)
    moved = max(float((reference[k] - start[k]).abs().max()) for k in reference)
    assert moved > 100 * TOLERANCE  # the comparison below has power: training moved the weights
    for name in reference:
        torch.testing.assert_close(ranks[1][name], ranks[0][name], rtol=0, atol=TOLERANCE, msg=f"rank 1: {name}")
        torch.testing.assert_close(ranks[0][name], reference[name], rtol=0, atol=TOLERANCE, msg=f"ddp: {name}")

    # The logged gradient norm is taken after DDP's all-reduce: a sum over ranks instead of the mean
    # would double it, which Muon and AdamW (scale-invariant updates) would hide from the weights.
    logged = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (out, single)]
    steps = [[r for r in rows if "grad_norm" in r] for rows in logged]
    assert [r["step"] for r in steps[0]] == [r["step"] for r in steps[1]] == list(range(1, STEPS + 1))
    for ddp_row, one_row in zip(*steps, strict=True):
        assert ddp_row["grad_norm"] == pytest.approx(one_row["grad_norm"], rel=1e-4)
        assert ddp_row["loss"] == pytest.approx(one_row["loss"], rel=1e-5)

    results = json.loads((out / "results.json").read_text())
    assert results["hardware"]["processes"] == 2 and results["hardware"]["threads_per_process"] == 1
    assert results["bytes_seen"] == json.loads((single / "results.json").read_text())["bytes_seen"]
    model = MultiScaleTransformer.from_pretrained(out)  # single-process code reads what rank 0 wrote
    torch.testing.assert_close(model.state_dict(), {k: v for k, v in ranks[0].items()}, rtol=0, atol=0)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000002.pt", "step_0000004.pt"]
