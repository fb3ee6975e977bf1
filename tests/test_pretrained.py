"""The model bundled in the package: present, causal, and used when no --model is given."""

import argparse
import math
import subprocess
import sys

import httpx
import pytest
import torch
from safetensors import safe_open

from multiscale_transformer.commands.common import model_path_from_args
from multiscale_transformer.errors import UserError
from multiscale_transformer.evaluation.causality import perturbation_leak
from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.pretrained import bundled_model_dir

from .test_serve_cli import running_serve


def test_bundled_model_is_installed_causal_and_loads_as_float32() -> None:
    path = bundled_model_dir()
    assert path is not None, "the bundled weights are missing from the package"
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert f.get_tensor("tok_emb.weight").dtype == torch.float16  # stored in 16 bits
    model = MultiScaleTransformer.from_pretrained(path)
    # Fill-in-the-middle trained (issue 13), in the layout `axl train --preset mini-post20` builds (issue 12:
    # Hourglass pooling, cross blocks k->1x, layers 2-3-3, two layers after the fusion), reading 8,192
    # bytes through windows (issue 27: mini-post20-8k).
    assert model.config == ModelConfig.from_name("mini-post20-8k")
    assert model.config.fim and model.config.post_fusion_layers == 2 and model.config.cross_pairs == [[1, 0], [2, 0]]
    assert model.config.rolling and model.config.max_seq_len == 8192
    assert model.tok_emb.weight.dtype == torch.float32
    with torch.no_grad():  # far past the byte window (256) and the coarse one (1,024)
        assert perturbation_leak(model, 258, [5, 300, 1500], cuts_per_length=3).magnitude == 0.0
    assert (path / "README.md").exists() and (path / "results.json").exists()


def test_missing_bundle_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("multiscale_transformer.pretrained.bundled_model_dir", lambda: None)
    with pytest.raises(UserError, match="no bundled model"):
        model_path_from_args(argparse.Namespace(model=None))


def test_generate_needs_no_model_flag() -> None:
    cmd = [sys.executable, "-m", "multiscale_transformer", "generate", "--max-new-tokens", "48", "--seed", "0"]
    result = subprocess.run([*cmd, "def fibonacci(n):"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("def fibonacci(n):") and len(result.stdout) > len("def fibonacci(n):") + 10


def test_serve_needs_no_model_flag() -> None:
    with running_serve(["--threads", "1"]) as base:
        body = {"prompt": "def add(a, b):", "max_tokens": 24, "temperature": 0}
        response = httpx.post(f"{base}/v1/completions", json=body, timeout=60)
        assert response.status_code == 200
        assert response.json()["choices"][0]["text"]
        assert response.json()["model"] == "axl-mini"


@pytest.mark.parametrize(("repeats", "expected"), [(1, 1.590121), (12, 0.563772)])
def test_the_bundled_weights_score_what_they_scored_when_they_were_bundled(repeats: int, expected: float) -> None:
    """A change to the forward must not change the math: the bundled model's bits per byte on a fixed
    text, short and (repeated) longer than the byte window, measured when these weights were bundled
    (the stage-6 model scored 1.729765 on the short text at commit 0be25df and at every commit since;
    the first version of the one-forward refactor scored 2.198 there: a cross block's output dropped)."""
    model = MultiScaleTransformer.from_pretrained(bundled_model_dir())
    text = b"def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    ids = torch.tensor([[257, *(text * repeats)]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids)[0, :-1], -1).gather(1, ids[0, 1:, None])
    bits = -logprobs.sum().item() / (ids.shape[1] - 1) / math.log(2)
    assert bits == pytest.approx(expected, abs=1e-4)
