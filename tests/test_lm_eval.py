"""lm-evaluation-harness as a real client: `lm-eval run --model local-completions` with the remote
tokenizer scores a local loglikelihood_rolling task against a live `axl serve`, and its bits per
byte agree with `axl eval --stride 256` on the same texts (both score disjoint 256-byte windows)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from multiscale_transformer.model.config import load_config
from multiscale_transformer.pretrained import bundled_model_dir
from multiscale_transformer.serving.app import create_app
from tests.live import live_server

TASK = """task: axl_text
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
"""


def _texts(folder: Path) -> list[str]:
    """Three real Python files (cut to 3,000 characters) from the running interpreter's stdlib."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for name in ("json/decoder.py", "textwrap.py", "colorsys.py"):
        text = (stdlib / name).read_text(encoding="utf-8")[:3000]
        (folder / name.replace("/", "_")).write_text(text, encoding="utf-8")
        texts.append(text)
    return texts


def test_lm_eval_local_completions_agrees_with_axl_eval(tmp_path: Path) -> None:
    model_dir = bundled_model_dir()
    assert model_dir is not None, "the bundled model is part of the package"
    lm_eval = shutil.which("lm-eval", path=str(Path(sys.executable).parent))
    assert lm_eval is not None, "lm-eval is a test dependency ([test] extra)"
    files = tmp_path / "files"
    files.mkdir()
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(files)), encoding="utf-8")
    (tmp_path / "axl_text.yaml").write_text(TASK.format(data=data), encoding="utf-8")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "OMP_NUM_THREADS": "1",
    }
    context = load_config(model_dir).max_seq_len
    with live_server(create_app(model_dir, name="axl-mini")) as base:
        model_args = (
            f"model=axl-mini,base_url={base}/v1/completions,tokenizer_backend=remote,"
            f"max_length={context},custom_prefix_token_id=257"
        )
        command = [lm_eval, "run", "--model", "local-completions", "--model_args", model_args, "--tasks", "axl_text"]
        command += ["--include_path", str(tmp_path), "--output_path", str(tmp_path / "out")]
        run = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=500,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("results_*.json")
    harness = json.loads(results.read_text())["results"]["axl_text"]["bits_per_byte,none"]

    command = [sys.executable, "-m", "multiscale_transformer.cli", "eval", "--model", str(model_dir)]
    # lm-eval's rolling windows are disjoint windows of max_length: axl eval's with the stride at the context
    command += ["--data", str(files), "--all-files", "--stride", str(context), "--json"]
    ours = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ours.returncode == 0, ours.stderr
    expected = json.loads(ours.stdout)
    assert expected["bytes"] == 9000 and expected["stride"] == context
    print(f"lm-eval {harness:.4f} bits/byte, axl eval --stride 256 {expected['bits_per_byte']:.4f}")
    assert harness == pytest.approx(expected["bits_per_byte"], rel=0.01)
    assert 0.5 < harness < 4  # a trained model: context matters, so a window protocol mismatch would show
