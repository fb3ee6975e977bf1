import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from multiscale_transformer.model.model import MultiScaleTransformer

from .test_data import small_corpus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    src = small_corpus(tmp_path, n=20)
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
        "-m", "multiscale_transformer", "train", "--data", str(src), "--out", str(out),
        "--cache-dir", str(tmp_path / "cache"), "--preset", "tiny", "--context", "32", "--batch-size", "2",
        "--max-steps", "4", "--eval-every", "2", "--eval-windows", "4", "--log-every", "1",
        "--checkpoint-every", "2", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["hardware"]["processes"] == 2 and results["hardware"]["threads_per_process"] == 1
    assert results["bytes_seen"] == 4 * 2 * 2 * 32  # steps x ranks x batch x context
    model = MultiScaleTransformer.from_pretrained(out)  # single-process code reads what rank 0 wrote
    assert model.num_parameters() == results["training_results"]["params"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000002.pt", "step_0000004.pt"]
