"""axl eval: every byte scored once, bits per byte = mean loss / ln 2, stride semantics, baselines, probe, CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from multiscale_transformer.cli import main
from multiscale_transformer.errors import UserError
from multiscale_transformer.evaluation.baselines import compressor_baselines, unigram_entropy
from multiscale_transformer.evaluation.bpb import evaluate_documents, sliding_windows, validation_documents
from multiscale_transformer.evaluation.probes import HEADERS, function_end, function_parses, run_probe
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.training.data import Document, collect_documents, split_documents
from multiscale_transformer.training.tokenizer import EOS_ID

from .conftest import make_model

T = 16  # a small context so that files span many windows


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Many tiny forward passes: a second thread only adds synchronisation on a busy 2-core machine.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small() -> MultiScaleTransformer:
    torch.manual_seed(0)
    return make_model("tiny", max_seq_len=T)


def docs_of(*texts: bytes) -> list[Document]:
    return [Document(f"f{i}.py", t) for i, t in enumerate(texts)]


def reference_nll(model: MultiScaleTransformer, data: bytes, context_of: list[tuple[int, int]]) -> float:
    """Summed NLL of each byte p (target p+1 of EOS+data) predicted from ids[a:p+1] for given (p, a)."""
    ids = torch.tensor([EOS_ID, *data])
    total = 0.0
    with torch.no_grad():
        for p, a in context_of:
            logits = model(ids[None, a : p + 1])[0, -1]
            total += float(F.cross_entropy(logits[None], ids[p + 1 : p + 2]))
    return total


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 40, 97])
@pytest.mark.parametrize("stride", [1, 5, 8, 16])
def test_sliding_windows_score_every_byte_once_with_enough_context(n: int, stride: int) -> None:
    counts = [0] * (n + 1)
    for w in sliding_windows(n, T, stride):
        assert w.end - w.start <= T
        assert w.start <= w.score_from < w.end
        for target in range(w.score_from + 1, w.end + 1):
            counts[target] += 1
            context = target - w.start  # ids before the target inside the window
            assert context >= min(target, T - stride + 1)
    assert counts[1:] == [1] * n


def test_stride_outside_the_context_is_a_user_error() -> None:
    with pytest.raises(UserError, match="stride"):
        list(sliding_windows(10, T, T + 1))
    with pytest.raises(UserError, match="stride"):
        list(sliding_windows(10, T, 0))


def test_bits_per_byte_is_mean_loss_over_ln2(small: MultiScaleTransformer) -> None:
    texts = [b"def f(x):\n", b"return 1", b"x"]  # all shorter than the context: one full pass each
    result = evaluate_documents(small, docs_of(*texts))
    ids = [torch.tensor([EOS_ID, *t]) for t in texts]
    with torch.no_grad():
        losses = [F.cross_entropy(small(i[None, :-1])[0], i[1:], reduction="sum") for i in ids]
    mean_loss = float(sum(losses)) / sum(map(len, texts))
    assert result.bytes == sum(map(len, texts)) == 19
    assert result.loss == pytest.approx(mean_loss, rel=1e-5)
    assert result.bits_per_byte == pytest.approx(mean_loss / math.log(2), rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(mean_loss), rel=1e-5)
    assert [f.bytes for f in result.files] == [10, 8, 1]


def test_bits_per_byte_by_position_in_the_file(small: MultiScaleTransformer) -> None:
    """The bands add up to the file, and each is the loss of exactly its bytes (recomputed window by
    window: byte i's loss where the protocol scores it)."""
    data = bytes(32 + (i * 7919) % 90 for i in range(4100))  # reaches the last band (4096+)
    result = evaluate_documents(small, docs_of(data, data[:300]), stride=T)
    ids = torch.tensor([EOS_ID, *data])
    parts = []
    with torch.no_grad():
        for w in sliding_windows(len(data), T, T):
            nll = F.cross_entropy(small(ids[None, w.start : w.end])[0], ids[w.start + 1 : w.end + 1], reduction="none")
            parts.append(nll[w.score_from - w.start :])
    nll = torch.cat(parts).double()  # (4100,)
    bands = result.by_position()
    assert [b["band"] for b in bands] == ["0-256", "256-1024", "1024-4096", "4096+"]
    assert [b["bytes"] for b in bands] == [256 + 256, 768 + 44, 3072, 4]
    first = result.files[0]
    assert sum(first.band_nats) == pytest.approx(first.nats, rel=1e-9)
    for b, (lo, hi) in enumerate([(0, 256), (256, 1024), (1024, 4096), (4096, 4100)]):
        assert first.band_nats[b] == pytest.approx(float(nll[lo:hi].sum()), rel=1e-6)


def test_compressors_by_position_charge_each_band_what_it_adds() -> None:
    from multiscale_transformer.evaluation.bands import band_bits, compressor_bands
    from multiscale_transformer.evaluation.baselines import COMPRESSORS

    xz = COMPRESSORS["xz -9e"]
    head = random.Random(0).randbytes(1024)  # incompressible on its own
    data = head + head * 3 + b"x" * 200  # then the same bytes again: a coder that remembers pays little
    bits = band_bits(data, xz)
    assert sum(bits) == 8 * (len(xz(data)) - len(xz(b"")))  # every byte charged once, no header
    assert bits[0] / 256 > 7.5 and bits[2] / 3072 < 0.5  # 0-256 costs ~8 bits/byte; 1K-4K repeats it
    short = b"def f():\n    return 1\n"
    per_band = compressor_bands([data, short], ("xz -9e", "gzip -9"))
    assert set(per_band) == {"xz -9e", "gzip -9"}
    expected = (band_bits(data, xz)[0] + band_bits(short, xz)[0]) / (256 + len(short))
    assert per_band["xz -9e"][0] == pytest.approx(expected)


def test_stride_one_gives_every_byte_the_full_context(small: MultiScaleTransformer) -> None:
    data = bytes(range(32, 32 + 40))
    result = evaluate_documents(small, docs_of(data), stride=1)
    expected = reference_nll(small, data, [(p, max(0, p + 1 - T)) for p in range(len(data))])
    assert result.files[0].nats == pytest.approx(expected, rel=1e-4)


def test_stride_equal_to_context_is_non_overlapping_chunks(small: MultiScaleTransformer) -> None:
    data = b"import os\nimport sys\n\ndef main():\n    return 0\n"
    n = len(data)  # 46: chunks of 16, 16 and 14 bytes; the last window ends at the file's end
    result = evaluate_documents(small, docs_of(data), stride=T)
    expected = reference_nll(small, data, [(p, 0 if p < T else min(p // T * T, n - T)) for p in range(n)])
    assert result.files[0].nats == pytest.approx(expected, rel=1e-4)
    overlapping = evaluate_documents(small, docs_of(data), stride=T // 2)
    assert overlapping.files[0].nats != pytest.approx(expected, rel=1e-4), "the stride must change the contexts"


def test_short_files_do_not_depend_on_the_stride(small: MultiScaleTransformer) -> None:
    docs = docs_of(b"a = 1\n", b"b = [2, 3]\n")
    results = {s: evaluate_documents(small, docs, stride=s).loss for s in (1, 3, T)}
    assert results[1] == pytest.approx(results[3], rel=1e-5) == pytest.approx(results[T], rel=1e-5)


def test_fine_only_scores_the_fine_path(small: MultiScaleTransformer) -> None:
    data = b"print('hi')"
    ids = torch.tensor([EOS_ID, *data])
    with torch.no_grad():
        fine = float(F.cross_entropy(small(ids[None, :-1], fine_only=True)[0], ids[1:], reduction="sum"))
    result = evaluate_documents(small, docs_of(data), fine_only=True)
    assert result.files[0].nats == pytest.approx(fine, rel=1e-5)
    assert evaluate_documents(small, docs_of(data)).files[0].nats != pytest.approx(fine, rel=1e-5)


def test_compressor_baselines_on_known_bytes() -> None:
    assert unigram_entropy(b"abab") == pytest.approx(1.0)
    assert unigram_entropy(b"aaaa") == 0.0
    files = [b"def f():\n    return 1\n" * 50, b"x = 2\n" * 80]
    base = compressor_baselines(files)
    assert base.bytes == sum(map(len, files))
    assert set(base.per_file) == set(base.concatenated) == {"gzip -9", "bzip2 -9", "xz -9e"}
    assert all(0 < bpb < 1 for bpb in base.per_file.values()), "repetitive text compresses far below 8 bits"
    assert base.unigram_entropy == pytest.approx(unigram_entropy(b"".join(files)))


def test_function_end_and_parse() -> None:
    assert function_end(b"    return 1\n") is None  # the body may go on
    assert function_end(b"    return 1\n\nx = 2") == 14
    assert function_end(b"x") == 0
    assert function_parses("def f(a):\n", b"    return a\n")
    assert not function_parses("def f(a):\n", b"    return (a\n")
    assert not function_parses("def f(a):\n", b"")


def test_generation_probe_is_reproducible(small: MultiScaleTransformer) -> None:
    first = run_probe(small, "sampled", max_new_tokens=12, seed=3)
    again = run_probe(small, "sampled", max_new_tokens=12, seed=3)
    assert [c.body for c in first.completions] == [c.body for c in again.completions]
    assert len(first.completions) == len(HEADERS)
    assert all(len(c.body) <= 12 for c in first.completions)
    assert 0.0 <= first.parse_rate <= 1.0 and first.mean_length <= 12


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "code"
    root.mkdir()
    for i in range(12):
        (root / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i} + {i * i}\n" * (i + 1))
    (root / "notes.txt").write_text("not python")
    return root


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["eval", "--threads", "1", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_cli_json_on_a_model_trained_by_axl_train(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    train = ["train", "--out", str(out), "--data", str(corpus), "--cache-dir", str(tmp_path / "cache")]
    train += ["--context", "32", "--batch-size", "2", "--max-steps", "2", "--eval-windows", "1"]
    assert main([*train, "--threads", "1", "--quiet"]) == 0
    capsys.readouterr()
    report = run_json(capsys, "--model", str(out), "--data", str(corpus))
    docs, _ = collect_documents([corpus])
    _, val = split_documents(docs, 0.05)  # the split axl train held out
    assert report["files"] == len(val) and report["bytes"] == sum(len(d.data) for d in val)
    assert report["bits_per_byte"] == pytest.approx(report["loss"] / math.log(2))
    assert report["perplexity"] == pytest.approx(math.exp(report["loss"]))
    assert report["baselines"]["bytes"] == report["bytes"]
    assert len(report["baselines_by_position"]["xz -9e"]) == len(report["by_position"])
    assert report["stride"] == 16 and report["context"] == 32
    assert [f["name"] for f in report["per_file"]] == [d.name for d in val]


def test_eval_cli_all_files_and_generation(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(
        capsys, "--preset", "tiny", "--data", str(corpus), "--all-files", "--generation", "--max-new-tokens", "8"
    )
    assert report["files"] == 12
    assert report["bytes"] == sum(p.stat().st_size for p in corpus.glob("*.py"))
    assert set(report["generation"]) == {"greedy", "sampled"}
    assert report["generation"]["greedy"]["mean_completion_bytes"] <= 8


def test_validation_documents_match_the_training_split(corpus: Path) -> None:
    docs, _ = collect_documents([corpus])
    train, val = split_documents(docs, 0.3)
    assert [d.name for d in validation_documents([corpus], val_fraction=0.3)] == [d.name for d in val]
    assert not {d.name for d in train} & {d.name for d in val}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "tiny", "--stride", "1000"], "stride"),
        (["--preset", "tiny", "--data", "/nonexistent/dir"], "no such file"),
        (["--model", "/nonexistent/model"], "nonexistent"),
    ],
)
def test_eval_cli_bad_input_is_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--threads", "1", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
