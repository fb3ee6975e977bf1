"""axl adapt: the trainer's fine-tuning on one repository, resumable, with one-line refusals."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from multiscale_transformer.cli import main
from multiscale_transformer.model.model import MultiScaleTransformer

from .test_data import small_corpus
from .test_train import ENV, axl_train


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model (context 32) trained for a few steps: what gets adapted."""
    root = tmp_path_factory.mktemp("base")
    done = axl_train(small_corpus(root / "corpus", n=20), root / "model", "--max-steps", "2")
    assert done.returncode == 0, done.stderr
    return root / "model"


def adapt_args(base: Path, repo: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "multiscale_transformer", "adapt", "--model", str(base), "--repo", str(repo),
        "--out", str(out), "--cache-dir", str(out.parent / "cache"), "--threads", "1", "--quiet", *extra,
    ]  # fmt: skip


def test_adapt_trains_the_model_on_the_repository_and_resumes_after_a_kill(base: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for i in range(12):  # a project with its own names, unlike the base model's corpus
        (repo / "pkg").mkdir(parents=True, exist_ok=True)
        (repo / "pkg" / f"mod{i}.py").write_text(f"from pkg.core import Widget{i}\n\nw = Widget{i}(size={i})\n" * 6)
    out = tmp_path / "adapted"
    proc = subprocess.Popen(adapt_args(base, repo, out, "--minutes", "0.5"), env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("step_*.pt")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (out / "model.safetensors").exists()
    stopped_at = max(int(p.stem.split("_")[1]) for p in (out / "checkpoints").glob("step_*.pt"))

    resumed = subprocess.run(
        adapt_args(base, repo, out, "--minutes", "0.5", "--resume"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {stopped_at}" in resumed.stderr
    adapted, before = MultiScaleTransformer.from_pretrained(out), MultiScaleTransformer.from_pretrained(base)
    assert adapted.config == before.config
    pairs = zip(adapted.state_dict().values(), before.state_dict().values(), strict=True)
    moved = max(float((a - b).abs().max()) for a, b in pairs)
    assert moved > 1e-3  # it trained
    text = torch.tensor([list(b"w = Widget3(size=3)\n")])
    with torch.no_grad():  # and learned the project's names

        def loss(m: MultiScaleTransformer) -> float:
            return float(torch.nn.functional.cross_entropy(m(text[:, :-1])[0], text[0, 1:]))

        assert loss(adapted) < loss(before)


def test_adapt_refuses_a_repository_without_python_files(base: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "docs"
    empty.mkdir()
    (empty / "README.md").write_text("no code here")
    assert main(["adapt", "--model", str(base), "--repo", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"axl adapt: error: --repo {empty}: no usable .py files to adapt to"
    assert main(["adapt", "--model", str(base), "--repo", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such directory" in capsys.readouterr().err
