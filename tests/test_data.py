import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from multiscale_transformer.errors import UserError
from multiscale_transformer.training.data import (
    Corpus,
    batch_rng,
    collect_documents,
    prepare_corpus,
    sample_batch,
    split_documents,
)
from multiscale_transformer.training.tokenizer import EOS_ID

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def small_corpus(root: Path, n: int = 40) -> Path:
    """n real stdlib files (small ones) under root/src, plus the awkward cases the loader must skip."""
    src = root / "src"
    (src / "pkg").mkdir(parents=True)
    files = sorted(p for p in STDLIB.glob("*.py") if 500 < p.stat().st_size < 20_000)[:n]
    for i, p in enumerate(files):
        (src / ("pkg" if i % 2 else "") / p.name).write_bytes(p.read_bytes())
    (src / "dup.py").write_bytes(files[0].read_bytes())
    (src / "latin1.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    (src / "blob.py").write_bytes(b"\x00\x01\x02binary")
    (src / "empty.py").write_bytes(b"  \n")
    (src / "notes.txt").write_text("not matched by *.py")
    return src


def test_collect_skips_and_dedupes(tmp_path: Path) -> None:
    src = small_corpus(tmp_path)
    docs, stats = collect_documents([src])
    assert len(docs) == 40
    assert stats.counts == {"duplicate": 1, "non-UTF-8": 1, "binary": 1, "empty": 1}
    assert all(not d.name.startswith("/") for d in docs)
    assert any(d.name.startswith("pkg/") for d in docs)


def test_jsonl_and_txt_inputs(tmp_path: Path) -> None:
    jl = tmp_path / "code.jsonl"
    jl.write_text(json.dumps({"content": "def a():\n    pass\n"}) + "\n" + json.dumps({"text": "x = 1\n"}) + "\n{bad\n")
    txt = tmp_path / "more.txt"
    txt.write_text("print('hi')\n")
    docs, stats = collect_documents([jl, txt])
    assert [d.data for d in docs] == [b"def a():\n    pass\n", b"x = 1\n", b"print('hi')\n"]
    assert stats.counts == {"bad JSONL line": 1}


def test_split_is_by_file_and_deterministic(tmp_path: Path) -> None:
    docs, _ = collect_documents([small_corpus(tmp_path)])
    train, val = split_documents(docs, 0.2)
    assert train and val
    assert not {d.name for d in train} & {d.name for d in val}
    assert len(train) + len(val) == len(docs)
    _, again_val = split_documents(list(reversed(docs)), 0.2)
    assert {d.name for d in again_val} == {d.name for d in val}


def test_window_inserts_eos_between_documents(tmp_path: Path) -> None:
    (tmp_path / "d.bin").write_bytes(b"abcXY")
    corpus = Corpus(tmp_path / "d.bin", [3, 5])  # documents "abc" and "XY"
    assert len(corpus) == 7
    expected = [*b"abc", EOS_ID, *b"XY", EOS_ID]
    assert corpus.window(0, 7).tolist() == expected
    assert corpus.window(2, 4).tolist() == expected[2:6]


def test_prepared_corpus_round_trips_and_is_reused(tmp_path: Path) -> None:
    src = small_corpus(tmp_path)
    prepared, stats = prepare_corpus([src], tmp_path / "cache", val_fraction=0.2)
    assert not prepared.reused and stats.total == 4
    docs, _ = collect_documents([src])
    train, _ = split_documents(docs, 0.2)
    joined = []
    for d in train:
        joined += [*d.data, EOS_ID]
    assert prepared.train.window(0, len(joined)).tolist() == joined
    again, stats2 = prepare_corpus([src], tmp_path / "cache", val_fraction=0.2)
    assert again.reused and again.directory == prepared.directory and stats2.total == 4
    manifest = json.loads((prepared.directory / "manifest.json").read_text())
    assert set(manifest["splits"]["train"]["names"]).isdisjoint(manifest["splits"]["val"]["names"])
    (src / "new.py").write_text("y = 2\n")  # a changed input is a new cache entry
    changed, _ = prepare_corpus([src], tmp_path / "cache", val_fraction=0.2)
    assert not changed.reused and changed.directory != prepared.directory


def test_batches_are_a_function_of_seed_and_step(tmp_path: Path) -> None:
    prepared, _ = prepare_corpus([small_corpus(tmp_path)], tmp_path / "cache")
    a = sample_batch(prepared.train, 4, 32, batch_rng(0, 7, 0))
    b = sample_batch(prepared.train, 4, 32, batch_rng(0, 7, 0))
    c = sample_batch(prepared.train, 4, 32, batch_rng(0, 7, 1))
    assert a.shape == (4, 33) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.max() <= EOS_ID


def test_empty_corpus_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "e.py").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        prepare_corpus([tmp_path], tmp_path / "cache")
    with pytest.raises(UserError, match="no input files"):
        prepare_corpus([tmp_path], tmp_path / "cache", glob="*.rs")


def test_unigram_entropy(tmp_path: Path) -> None:
    (tmp_path / "d.bin").write_bytes(b"abab")
    corpus = Corpus(tmp_path / "d.bin", [4])  # a, b twice each, one EOS
    p = np.array([2, 2, 1]) / 5
    assert corpus.unigram_entropy_bits() == pytest.approx(float(-(p * np.log2(p)).sum()))
