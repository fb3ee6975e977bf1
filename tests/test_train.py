import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multiscale_transformer.model.model import MultiScaleTransformer

from .test_data import small_corpus

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train_args(src: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "multiscale_transformer", "train", "--data", str(src), "--out", str(out),
        "--cache-dir", str(out.parent / "cache"), "--preset", "tiny-coarse20", "--context", "32", "--batch-size", "4",
        "--eval-windows", "8", "--log-every", "1", "--threads", "1", "--seed", "3", "--quiet", *extra,
    ]  # fmt: skip


def axl_train(src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(train_args(src, out, *extra), capture_output=True, text=True, timeout=300, env=ENV)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def curve(out: Path) -> list[tuple]:
    """The run's history without wall-clock fields: what must match between resumed and uninterrupted."""
    skip = {"time", "bytes_per_s"}
    return [tuple(sorted((k, v) for k, v in r.items() if k not in skip)) for r in rows(out)]


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_corpus(tmp_path_factory.mktemp("corpus"), n=30)


RUN = ("--max-steps", "40", "--eval-every", "20", "--checkpoint-every", "4")


def test_sigkill_then_resume_continues_exactly(src: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    done = axl_train(src, whole, *RUN)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_args(src, killed, *RUN), env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((killed / "checkpoints").glob("step_*.pt")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    stopped_at = max(int(p.stem.split("_")[1]) for p in (killed / "checkpoints").glob("step_*.pt"))
    assert 0 < stopped_at < 40
    assert not (killed / "model.safetensors").exists()

    resumed = axl_train(src, killed, *RUN, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {stopped_at}" in resumed.stderr
    steps = [r["step"] for r in rows(killed) if "loss" in r]
    assert steps == list(range(1, 41))  # the step counter continues, no step lost or repeated
    assert curve(killed) == curve(whole)  # same lr and loss at every step, same validation
    a, b = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_outputs_and_model_load(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    preset = ("--preset", "mini-post20")  # wins over train_args' preset: every architecture option on
    done = axl_train(src, out, "--max-steps", "6", "--eval-every", "3", "--fine-loss-weight", "0.2", *preset)
    assert done.returncode == 0, done.stderr
    model = MultiScaleTransformer.from_pretrained(out)
    assert model.config.max_seq_len == 32
    assert model.config.coarse_input == "fine" and model.config.cross_pairs == [[1, 0], [2, 0]]
    assert model.config.scale_depths == [2, 3, 3] and len(model.post) == 2
    results = json.loads((out / "results.json").read_text())
    tr = results["training_results"]
    assert tr["steps"] == 6 and tr["optimizer"] == "Muon+AdamW" and tr["attention"] == "SDPA"
    assert tr["params"] == model.num_parameters() and tr["context_window"] == 32
    assert results["bytes_seen"] == 6 * 4 * 32
    assert results["val_bits_per_byte"] > 0 and results["val_bits_per_byte_fine"] > 0
    assert "kg CO2/kWh" in results["energy"]["method"]
    assert json.loads((out / "config.json").read_text())["training_results"]["steps"] == 6
    assert (out / "training.png").stat().st_size > 1000
    assert [r["step"] for r in rows(out) if "val_bpb" in r] == [3, 6]


def test_sigterm_saves_and_exits_cleanly(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "term"
    proc = subprocess.Popen(
        train_args(src, out, "--max-steps", "100000", "--checkpoint-every", "1000"), env=ENV,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped by signal" in err
    assert list((out / "checkpoints").glob("step_*.pt")) and (out / "model.safetensors").exists()


def test_checkpoints_come_by_time_as_well_as_by_steps(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "timed"
    by_time = ("--checkpoint-every", "1000", "--checkpoint-minutes", "0.0001", "--keep-checkpoints", "10")
    assert axl_train(src, out, "--max-steps", "4", "--eval-every", "4", *by_time).returncode == 0
    written = sorted(p.name for p in (out / "checkpoints").glob("step_*.pt"))
    assert written == [f"step_000000{i}.pt" for i in (1, 2, 3, 4)]
    # A training checkpoint is a model file too: `--model run/checkpoints/step_N.pt` works everywhere.
    last = MultiScaleTransformer.from_pretrained(out / "checkpoints" / "step_0000004.pt").state_dict()
    final = MultiScaleTransformer.from_pretrained(out).state_dict()
    assert all(torch.equal(last[k], final[k]) for k in final)
    steps_only = tmp_path / "steps"
    flags = ("--checkpoint-every", "1000", "--checkpoint-minutes", "0", "--max-steps", "4", "--eval-every", "4")
    assert axl_train(src, steps_only, *flags).returncode == 0
    assert [p.name for p in (steps_only / "checkpoints").glob("step_*.pt")] == ["step_0000004.pt"]  # the final one


def test_bad_resume_checkpoints_fail_before_training(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert axl_train(src, out, "--max-steps", "2", "--checkpoint-every", "1").returncode == 0
    again = axl_train(src, out, "--max-steps", "4")
    assert again.returncode == 2 and "--resume" in again.stderr

    other = axl_train(src, out, "--max-steps", "4", "--resume", "--context", "64")
    assert other.returncode == 2 and "different model config" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1

    latest = sorted((out / "checkpoints").glob("step_*.pt"))[-1]
    latest.write_bytes(latest.read_bytes()[:100])
    broken = axl_train(src, out, "--max-steps", "4", "--resume")
    assert broken.returncode == 2 and "not a readable training checkpoint" in broken.stderr
    assert "Traceback" not in broken.stderr and len(broken.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--time-budget", "soon"], "duration"),
        (["--out", "/proc/axl-cannot-write"], "not writable"),
        (["--config", "{bad"], "invalid JSON"),
        (["--config", '{"d_model": 63}'], "divisible"),
        (["--data", "/no/such/dir"], "no such file"),
    ],
)
def test_bad_flags_are_one_line(src: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    result = axl_train(src, tmp_path / "o", "--max-steps", "1", *extra)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("20m", 1200), ("1h", 3600), ("1h30m", 5400), ("45", 45)])
def test_duration(text: str, seconds: float) -> None:
    from multiscale_transformer.commands.train import duration

    assert duration(text) == seconds


def test_init_from_starts_at_the_models_weights(src: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert axl_train(src, first, "--max-steps", "3").returncode == 0
    base = MultiScaleTransformer.from_pretrained(first)

    args = train_args(src, tmp_path / "tuned", "--max-steps", "1", "--lr", "1e-12")
    for flag in ("--preset", "--context"):  # the config comes from the model
        i = args.index(flag)
        del args[i : i + 2]
    run = lambda *extra: subprocess.run([*args, *extra], capture_output=True, text=True, timeout=300, env=ENV)  # noqa: E731
    done = run("--init-from", str(first), "--seed", "9")
    assert done.returncode == 0, done.stderr
    tuned = MultiScaleTransformer.from_pretrained(tmp_path / "tuned")
    assert tuned.config == base.config
    for (name, a), b in zip(base.state_dict().items(), tuned.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name  # one step at lr 1e-12 moves nothing visible

    both = run("--init-from", str(first), "--preset", "tiny")
    assert both.returncode == 2 and "--init-from" in both.stderr and "Traceback" not in both.stderr
    missing = run("--init-from", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "no such model" in missing.stderr and "Traceback" not in missing.stderr


def test_init_from_extends_the_context_and_keeps_the_weights(src: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert axl_train(src, first, "--max-steps", "2").returncode == 0
    base = MultiScaleTransformer.from_pretrained(first)

    args = train_args(src, tmp_path / "long", "--max-steps", "1", "--lr", "1e-12")
    i = args.index("--preset")
    del args[i : i + 2]
    args[args.index("--context") + 1] = "128"
    run = lambda *extra: subprocess.run([*args, *extra], capture_output=True, text=True, timeout=300, env=ENV)  # noqa: E731
    windows = '{"attention_window": 32, "coarse_window": 64}'
    done = run("--init-from", str(first), "--config", windows)
    assert done.returncode == 0, done.stderr
    long = MultiScaleTransformer.from_pretrained(tmp_path / "long")
    assert (long.config.max_seq_len, long.config.attention_window, long.config.coarse_window) == (128, 32, 64)
    assert base.config.max_seq_len == 32
    for (name, a), b in zip(base.state_dict().items(), long.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name

    wider = run("--init-from", str(first), "--config", '{"d_model": 128}')
    assert wider.returncode == 2 and "drop d_model" in wider.stderr and "Traceback" not in wider.stderr
