"""`axl eval --fim`: holes are real spans of the files, scored by bits and by greedy exact match."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from multiscale_transformer.evaluation.infilling import evaluate_infilling, make_holes, max_middle
from multiscale_transformer.training.data import Document

from .conftest import make_model

SOURCE = b"".join(f"def f{i}(x):\n    y = x * {i}\n    return y + {i}\n\n".encode() for i in range(40))


def test_holes_are_spans_of_the_file_that_put_it_back_together() -> None:
    holes = make_holes([Document("a.py", SOURCE)], per_kind=10, window=128, seed=1)
    assert [h.kind for h in holes] == ["line"] * 10 + ["block"] * 10
    for h in holes:
        assert h.prefix + h.middle + h.suffix == SOURCE
        assert len(h.middle) <= max_middle(h.kind, 128) and h.suffix.startswith(b"\n")
        assert (b"\n" in h.middle) == (h.kind == "block")
    assert make_holes([Document("a.py", SOURCE)], 10, 128, seed=1) == holes  # seeded


@pytest.mark.parametrize("fim", [False, True])
def test_the_report_has_fim_numbers_only_for_a_fim_model(fim: bool) -> None:
    model = make_model("tiny", fim=fim)
    holes = make_holes([Document("a.py", SOURCE)], per_kind=3, window=model.config.max_seq_len)
    report = evaluate_infilling(model, holes).to_json()
    assert report["fim_trained"] is fim and report["line"]["holes"] == 3 and report["block"]["holes"] == 3
    assert report["line"]["prefix_only_bits_per_byte"] > 0
    assert ("prefix_and_suffix_bits_per_byte" in report["block"]) is fim
    assert set(report["single_line_exact_match"]) == ({"prefix_only", "prefix_and_suffix"} if fim else {"prefix_only"})


def test_axl_eval_fim_prints_json(tmp_path: Path) -> None:
    model_dir = make_model("tiny", fim=True).save_pretrained(tmp_path / "m")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_bytes(SOURCE)
    argv = [sys.executable, "-m", "multiscale_transformer", "eval", "--fim", "--fim-holes", "2", "--model",
            str(model_dir), "--data", str(tmp_path / "src"), "--all-files", "--json", "--threads", "1"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)["fim"]
    assert out["line"]["holes"] == 2 and out["block"]["prefix_and_suffix_bits_per_byte"] > 0
