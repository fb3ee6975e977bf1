"""`axl eval --fim`: holes are real spans of the files, scored by bits and by greedy exact match."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from multiscale_transformer.evaluation import infilling
from multiscale_transformer.evaluation.infilling import Hole, evaluate_infilling, make_holes, max_middle
from multiscale_transformer.generation import fim
from multiscale_transformer.generation.fim import Infill
from multiscale_transformer.generation.generate import TextStream
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.vocab import EOS_ID
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
    with_suffix = {"prefix_and_suffix", "prefix_and_suffix_editor"} if fim else set()
    assert set(report["single_line_exact_match"]) == {"prefix_only", *with_suffix}
    assert set(report["single_line_ended"]) == ({"greedy", "editor"} if fim else set())
    for ended in report["single_line_ended"].values():
        assert set(ended) == {"by_eos_or_stop_rule", "by_eos", "mean_bytes", "stopped_by"}


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


def test_exact_match_counts_the_holes_whose_greedy_answer_is_the_middle() -> None:
    """Holes built so that the right answers are known: each middle is, or is not, what the model greedily
    writes there (computed here through the public generation path), so each rate has one right value."""
    model = make_model("tiny", fim=True)
    limit = max_middle("line", model.config.max_seq_len) + 1
    greedy = SamplingParams(0.0, None, None, 1.0)

    def answers(prefix: bytes, suffix: bytes) -> tuple[bytes, bytes]:
        """(prefix alone, prefix and suffix): the greedy single line."""
        alone = b"".join(TextStream(model, [EOS_ID, *prefix], limit, greedy, [b"\n"]))
        plan = fim.plan(model.config, Infill(prefix, suffix), limit)
        return alone, b"".join(TextStream(model, plan.ids, plan.max_tokens, greedy, [b"\n"]))

    suffix = b"\n\nprint(area(2))\n"
    first, second = b"def area(r):\n    return r", b"def area(r):\n    x = "
    holes = [
        Hole("a.py", "line", first, answers(first, suffix)[0], suffix),  # right for the prefix alone
        Hole("a.py", "line", second, answers(second, suffix)[1], suffix),  # right with the suffix
        Hole("a.py", "line", first, answers(first, suffix)[0] + b"z", suffix),  # wrong for both
    ]
    assert all(h.middle and b"\n" not in h.middle for h in holes)
    rates = {
        mode: sum(h.middle == answers(h.prefix, h.suffix)[i] for h in holes) / len(holes)
        for i, mode in enumerate(("prefix_only", "prefix_and_suffix"))
    }
    assert all(1 / 3 <= rate <= 2 / 3 for rate in rates.values()), rates  # neither none nor all

    def editor_line(h: Hole) -> bytes:  # the editors' sampler chain: its first line, the same way
        plan = fim.plan(model.config, Infill(h.prefix, h.suffix), limit)
        return b"".join(TextStream(model, plan.ids, plan.max_tokens, infilling.EDITOR, [b"\n"]))

    rates["prefix_and_suffix_editor"] = sum(h.middle == editor_line(h) for h in holes) / len(holes)
    assert evaluate_infilling(model, holes).exact_match == rates


def test_ended_counts_infills_that_stop_before_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """An untrained model copies its last byte until the cap: greedy, none end (it writes no newline, so no
    line repeats). Infills that end (here after 3 bytes, as a model that learned where a middle ends
    would) are counted as ended, by what ended them; both samplings are reported apart."""
    model = make_model("tiny", fim=True)
    holes = make_holes([Document("a.py", SOURCE)], per_kind=4, window=model.config.max_seq_len)
    cap = max_middle("line", model.config.max_seq_len) + 1
    greedy = evaluate_infilling(model, holes).ended["greedy"]
    assert greedy == {"by_eos_or_stop_rule": 0.0, "by_eos": 0.0, "mean_bytes": cap, "stopped_by": {"length": 1.0}}
    stopped = {"greedy": iter(["eos", "word", "length", "indent"]), "editor": iter(["repeat", "eos", "eos", "length"])}

    def fake(model: object, hole: Hole, params: SamplingParams) -> tuple[bytes, str]:
        return hole.middle[:3], next(stopped["editor" if params.infill else "greedy"])

    monkeypatch.setattr(infilling, "_infill", fake)
    ended = evaluate_infilling(model, holes).ended
    shares = {"eos": 0.25, "indent": 0.25, "length": 0.25, "word": 0.25}
    assert ended["greedy"] == {"by_eos_or_stop_rule": 0.75, "by_eos": 0.25, "mean_bytes": 3.0, "stopped_by": shares}
    shares = {"eos": 0.5, "length": 0.25, "repeat": 0.25}
    assert ended["editor"] == {"by_eos_or_stop_rule": 0.75, "by_eos": 0.5, "mean_bytes": 3.0, "stopped_by": shares}
