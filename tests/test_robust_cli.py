"""Bad files and flags end in one line and a non-zero exit, never a traceback (issue 16, scenarios 6-7)."""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path

import pytest
import torch

from multiscale_transformer.cli import main
from multiscale_transformer.errors import UserError
from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.training import checkpoint as ckpt_io

from .conftest import make_model
from .test_cli import axl
from .test_serve_cli import free_port


def one_line_error(result_err: str, message: str) -> None:
    err = result_err.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert message in err, err


@pytest.mark.parametrize("flag", [["--temperature", "1e-300"], ["--top-p", "1e-50"], ["--repetition-penalty", "1e-40"]])
def test_generate_with_extreme_sampling_values_completes(flag: list[str]) -> None:
    result = axl("generate", "--preset", "tiny", "--max-new-tokens", "12", "--seed", "0", *flag, "def f():")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("def f():") and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"downsample_factors": ["x"]}, "downsample_factors must be a list of integers"),
        ({"downsample_factors": "124"}, "downsample_factors must be a list of integers"),
        ({"dropout": "abc"}, "dropout must be a number"),
        ({"rope_theta": None}, "rope_theta must be a number"),
        ({"bias": "no"}, "bias must be false"),
        ({"d_model": 65536, "n_heads": 8, "d_ff": 65536}, "GB"),
        ({"max_seq_len": 1_000_000_000}, "GB"),
        ({"max_seq_len": 1e9}, "max_seq_len must be a positive integer"),
    ],
)
def test_bad_configs_are_one_line(
    tmp_path: Path, change: dict, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = make_model("tiny").save_pretrained(tmp_path / "m")
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, **change}))
    assert main(["generate", "--model", str(model_dir), "--max-new-tokens", "2", "x"]) == 2
    one_line_error(capsys.readouterr().err, message)


def test_a_huge_config_is_refused_before_allocating() -> None:
    with pytest.raises(UserError, match="GB"):
        from multiscale_transformer.model.model import MultiScaleTransformer

        MultiScaleTransformer(ModelConfig.from_name("tiny", max_seq_len=10**9))


def test_a_directory_with_several_checkpoints_names_them(tmp_path: Path) -> None:
    model = make_model("tiny")
    state = {"model_state_dict": model.state_dict(), "config": model.config.to_dict()}
    for name in ("a.pt", "b.pt"):
        torch.save(state, tmp_path / name)
    result = axl("generate", "--model", str(tmp_path), "--max-new-tokens", "2", "x")
    assert result.returncode == 2
    one_line_error(result.stderr, "several .pt checkpoints (a.pt, b.pt)")
    assert axl("generate", "--model", str(tmp_path / "b.pt"), "--max-new-tokens", "2", "x").returncode == 0


def test_serve_with_an_impossible_host_or_a_busy_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):  # it used to abort (exit 134) in 2 of 3 runs: as a process, each run exits 2
        result = axl("serve", "--preset", "tiny", "--host", "999.1.1.1", "--port", str(free_port()))
        assert result.returncode == 2
        one_line_error(result.stderr, "--host '999.1.1.1' is not an address this machine can listen on")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--preset", "tiny", "--port", str(port)]) == 2
        one_line_error(capsys.readouterr().err, f"port {port} on 127.0.0.1 is already in use")


def test_eval_names_why_files_were_skipped(tmp_path: Path) -> None:
    model_dir = make_model("tiny").save_pretrained(tmp_path / "m")
    latin1 = tmp_path / "notes.txt"
    latin1.write_bytes("caf\xe9 = 1\n".encode("latin-1"))
    result = axl("eval", "--model", str(model_dir), "--data", str(latin1), "--all-files", "--no-baselines")
    assert result.returncode == 2
    one_line_error(result.stderr, "1 non-UTF-8")
    assert "*.py" not in result.stderr  # the glob does not apply to a file given directly
    good = tmp_path / "src"
    good.mkdir()
    (good / "a.py").write_text("def a():\n    return 1\n" * 20)
    (good / "b.py").write_bytes(b"\xff\xfe broken")
    result = axl("eval", "--model", str(model_dir), "--data", str(good), "--all-files", "--no-baselines", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["skipped_files"] == {"non-UTF-8": 1}


def test_a_full_disk_while_checkpointing_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    first = ckpt_io.save_checkpoint(out, 1, {"model": {"w": torch.ones(3)}})
    stale = ckpt_io.checkpoint_dir(out) / ".step_0000009.pt.tmp"  # left by a run killed mid-save
    stale.write_bytes(b"x" * 1000)
    real_save = torch.save

    def disk_full(obj: object, f: object, *args: object, **kwargs: object) -> None:
        real_save({"half": torch.zeros(1000)}, f)  # part of the file made it to disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match=r"No space left on device; the previous checkpoint step_0000001.pt is intact"):
        ckpt_io.save_checkpoint(out, 2, {"model": {"w": torch.zeros(3)}})
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in ckpt_io.checkpoint_dir(out).iterdir()) == [first.name]  # no temp files
    assert ckpt_io.latest_checkpoint(out) == first
    assert torch.equal(torch.load(first, weights_only=True)["model"]["w"], torch.ones(3))


def test_a_bad_jsonl_record_does_not_stop_training(tmp_path: Path) -> None:
    data = tmp_path / "code.jsonl"
    good = [json.dumps({"content": f"def f{i}(x):\n    return x * {i}\n" * 30}) for i in range(8)]
    data.write_text("\n".join([*good, '{"content": "bad = \\"\\ud800\\""}']) + "\n", encoding="utf-8")
    result = axl(
        "train", "--out", str(tmp_path / "run"), "--data", str(data), "--preset", "tiny",
        "--max-steps", "2", "--batch-size", "2", "--eval-every", "2", "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "JSONL text that is not valid Unicode" in result.stdout + result.stderr


def test_serve_exits_non_zero_when_the_scheduler_dies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading
    import time

    import httpx

    from multiscale_transformer.serving.engine import Engine

    def broken_step(self: Engine) -> None:
        raise SystemExit("a bug in the scheduler")

    monkeypatch.setattr(Engine, "_step", broken_step)
    port = free_port()

    def client() -> None:  # once the server is up, one request kills the scheduler
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"prompt": "x", "max_tokens": 5}, timeout=30)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    assert main(["serve", "--preset", "tiny", "--port", str(port), "--log-level", "critical"]) == 2
    thread.join(timeout=30)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("axl serve: error: the generation engine stopped (SystemExit")
