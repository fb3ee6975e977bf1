"""axl eval --repo: file alone equals axl eval, no mode sees a byte of a file ahead of the cursor, retrieval
finds the definition a cursor uses and never the file itself, dynamic evaluation steps only on scored bytes."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from multiscale_transformer.cli import main
from multiscale_transformer.evaluation.baselines import repository_compressors
from multiscale_transformer.evaluation.bpb import evaluate_documents
from multiscale_transformer.evaluation.repo import (
    MODES,
    RETRIEVAL_MODES,
    RepoOptions,
    evaluate_repository,
    plan_windows,
)
from multiscale_transformer.evaluation.retrieval import LeaveOneOutIndex, identifiers, split_chunks
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.training.data import Document

from .conftest import OPTIONS, make_model

T = 64  # a small context: files span many windows, yet a line of another file fits in its budget


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small() -> MultiScaleTransformer:
    return make_model("tiny", max_seq_len=T)


def source(seed: int, n_functions: int) -> bytes:
    """Python-looking text whose identifiers differ from seed to seed (and repeat across files)."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
    out = []
    for _ in range(n_functions):
        a, b = rng.choice(words, 2, replace=False)
        out.append(f"def {a}_{b}(x, y):\n    return {b}_{a}(x) + {int(rng.integers(100))} * y\n\n")
    return "".join(out).encode()


def repo_docs() -> list[Document]:
    return [Document(f"pkg/m{i}.py", source(i, 3 + i)) for i in range(3)]


# Large enough that one step moves the bits visibly, small enough to stay finite.
DYNAMIC = RepoOptions(lr=3e-3, optimizer="adam", chunk_lines=1, budget=0.75)


def nats_of(model: MultiScaleTransformer, docs: list[Document], mode: str, options: RepoOptions) -> list[np.ndarray]:
    return evaluate_repository(model, docs, [mode], options)[mode].nats


def test_alone_equals_axl_eval_per_file(small: MultiScaleTransformer) -> None:
    docs = repo_docs()
    alone = evaluate_repository(small, docs, ["alone"], RepoOptions())["alone"]
    reference = evaluate_documents(small, docs)
    for i, f in enumerate(reference.files):
        assert alone.file_bits_per_byte(i) == pytest.approx(f.bits_per_byte, rel=1e-5)
    assert alone.bits_per_byte == pytest.approx(reference.bits_per_byte, rel=1e-5)


def changed_at(data: bytes, t: int, how: str) -> bytes:
    if how == "one byte":
        return data[:t] + (b"Z" if data[t : t + 1] != b"Z" else b"Q") + data[t + 1 :]
    # The rest rewritten with a short name another file defines: a query that read it would retrieve that.
    return data[:t] + b"zq(zq)\n" * 4


@pytest.mark.parametrize("how", ["one byte", "the rest"])
@pytest.mark.parametrize("mode", MODES)
def test_no_scored_bit_before_a_changed_byte_moves(small: MultiScaleTransformer, mode: str, how: str) -> None:
    docs = [*repo_docs(), Document("pkg/z.py", b"def zq(x):\n    return x\n" * 3)]
    # Mid-way through a retrieval window (own context 16, stride 8): it scores bytes on both sides of t.
    t = len(docs[1].data) // 16 * 8 + 4
    changed = list(docs)
    changed[1] = Document(docs[1].name, changed_at(docs[1].data, t, how))
    if mode in RETRIEVAL_MODES:  # chunks do reach the context, or the test would prove nothing
        assert any(w.chunks for w in plan_windows(docs, T, mode, DYNAMIC) if w.file == 1 and w.first_byte < t)
    before, after = nats_of(small, docs, mode, DYNAMIC), nats_of(small, changed, mode, DYNAMIC)
    if mode not in RETRIEVAL_MODES:  # (with retrieval, other files may show chunks of the changed one)
        assert np.array_equal(before[0], after[0])  # read before the changed file, by weights it never touched
    assert np.array_equal(before[1][:t], after[1][:t])
    assert not np.array_equal(before[1][t : t + 1], after[1][t : t + 1])  # the change itself is seen


def test_retrieval_never_shows_a_file_its_own_chunks(small: MultiScaleTransformer) -> None:
    docs = repo_docs()
    windows = list(plan_windows(docs, T, "retrieval", DYNAMIC))
    assert sum(len(w.chunks) for w in windows) > len(windows) / 2  # retrieval did bring chunks
    assert all(c.file != w.file for w in windows for c in w.chunks)


def test_the_ranking_ignores_the_scored_file_entirely() -> None:
    """Leave-one-out: F's own bytes (after the cursor too) reach no BM25 statistic used while scoring F."""
    docs = repo_docs()
    rewritten = [docs[0], Document(docs[1].name, source(99, 20)), docs[2]]
    query = docs[1].data[:80]
    ranked = LeaveOneOutIndex(split_chunks(docs, 2), 1).search(query)
    assert ranked and ranked == LeaveOneOutIndex(split_chunks(rewritten, 2), 1).search(query)


def definitions_repo() -> list[Document]:
    names = [f"helper_{i}" for i in range(30)]
    defs = "".join(f"def {n}(value):\n    return value + {i}\n" for i, n in enumerate(names))
    defs += "def frobnicate_widget(widget):\n    return widget.spin()\n"
    user = b"import helpers\n\nresult = frobnicate_widget(value)\nprint(result)\n" + source(5, 4)
    return [Document("helpers.py", defs.encode()), Document("main.py", user)]


def test_retrieval_picks_the_chunk_that_defines_a_name_the_cursor_uses() -> None:
    docs = definitions_repo()
    options = RepoOptions(chunk_lines=2, stride=8)
    cursor = docs[1].data.index(b"print(result)")
    windows = [w for w in plan_windows(docs, 128, "retrieval", options) if w.file == 1]
    after_use = [w for w in windows if w.first_byte >= cursor]
    assert after_use
    for w in after_use:
        assert w.chunks[-1].data.startswith(b"def frobnicate_widget(widget):")  # the best, next to the file
    before_use = [w for w in windows if w.first_byte <= docs[1].data.index(b"frobnicate")]
    assert all(b"frobnicate" not in c.data for w in before_use for c in w.chunks)  # not known before it is used


def test_identifiers_leave_out_keywords() -> None:
    assert identifiers(b"def f(x): return x_1 + self.y  # 9z") == ["f", "x", "x_1", "self", "y", "z"]


def test_dynamic_scores_a_window_before_its_step(small: MultiScaleTransformer) -> None:
    docs = repo_docs()
    dynamic = nats_of(small, docs, "dynamic", DYNAMIC)
    alone = nats_of(small, docs, "alone", DYNAMIC)
    windows = list(plan_windows(docs, T, "dynamic", DYNAMIC))
    first, second = windows[0], windows[1]
    # The first window is scored by the weights as given: a step before scoring would move it.
    np.testing.assert_allclose(dynamic[0][: first.n_scored], alone[0][: first.n_scored], rtol=1e-5)
    # The second is scored after exactly one step on the first window's scored bytes, and no other.
    model = copy.deepcopy(small)
    opt = torch.optim.Adam(model.parameters(), lr=DYNAMIC.lr)
    ids = first.ids[None]
    F.cross_entropy(model(ids[:, :-1])[0, first.score_at :], ids[0, first.score_at + 1 :]).backward()
    opt.step()
    with torch.no_grad():
        ids = second.ids[None]
        expected = F.cross_entropy(
            model(ids[:, :-1])[0, second.score_at :], ids[0, second.score_at + 1 :], reduction="none"
        )
    got = dynamic[0][second.first_byte : second.first_byte + second.n_scored]
    np.testing.assert_allclose(got, expected.double().numpy(), rtol=1e-4)
    assert not np.allclose(got, alone[0][second.first_byte : second.first_byte + second.n_scored], rtol=1e-3)


@pytest.fixture(scope="module")
def rolling() -> MultiScaleTransformer:
    """Every attention windowed: it reads any length, and mode dynamic steps every `step_bytes`."""
    model = make_model("tiny", **{**OPTIONS["windows=8,16"], "max_seq_len": T})
    assert model.config.rolling
    return model


ROLLING = replace(DYNAMIC, step_bytes=16, step_context=32)


def test_rolling_dynamic_without_steps_is_the_full_pass_over_each_file(rolling: MultiScaleTransformer) -> None:
    """Read through the caches piece by piece, with weights that do not move (SGD, lr 0), every byte
    costs what one full pass over its whole file gives it (files longer than the context included)."""
    docs = [*repo_docs(), Document("pkg/long.py", source(7, 12))]
    assert len(docs[-1].data) > 3 * T
    got = nats_of(rolling, docs, "dynamic", replace(ROLLING, lr=0.0, optimizer="sgd"))
    for doc, nats in zip(docs, got, strict=True):
        ids = torch.cat([torch.tensor([257]), torch.tensor(list(doc.data))])[None]
        with torch.no_grad():
            want = F.cross_entropy(rolling(ids[:, :-1])[0], ids[0, 1:], reduction="none")
        np.testing.assert_allclose(nats, want.double().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("how", ["one byte", "the rest"])
def test_rolling_dynamic_steps_only_on_scored_bytes(rolling: MultiScaleTransformer, how: str) -> None:
    """A changed byte moves no bit scored before it, in its file or in the files read before it; the
    steps do move the bits after the first piece (the weights learn), and the first piece is scored
    by the weights as given."""
    docs = repo_docs()
    t = 33  # the second byte of the third piece of 16: a step that read ahead of its piece would see it
    changed = [docs[0], Document(docs[1].name, changed_at(docs[1].data, t, how)), docs[2]]
    before, after = nats_of(rolling, docs, "dynamic", ROLLING), nats_of(rolling, changed, "dynamic", ROLLING)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1][:t], after[1][:t])
    assert not np.array_equal(before[1][t : t + 1], after[1][t : t + 1])
    frozen = nats_of(rolling, docs, "dynamic", replace(ROLLING, lr=0.0, optimizer="sgd"))
    np.testing.assert_allclose(before[0][:16], frozen[0][:16], rtol=1e-5)
    assert not np.allclose(before[0][16:], frozen[0][16:], rtol=1e-3)


def test_dynamic_leaves_the_callers_model_as_it_was(small: MultiScaleTransformer) -> None:
    before = {k: v.clone() for k, v in small.state_dict().items()}
    nats_of(small, repo_docs(), "both", replace(DYNAMIC, optimizer="sgd"))
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())


def test_repository_compressors_learn_across_files() -> None:
    files = [source(i, 20) for i in range(4)]
    bits = repository_compressors(files)
    assert bits["xz -9e, whole repository"] < bits["xz -9e, each file alone"]
    pytest.importorskip("pyppmd")
    assert bits["PPMd order 16, whole repository"] < bits["PPMd order 16, each file alone"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    for d in repo_docs():
        (root / d.name).write_bytes(d.data)
    (root / "README.txt").write_text("not python")
    return root


def test_eval_repo_cli_json(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", "--threads", "1", "--json", "--preset", "tiny", "--repo", str(repo), "--modes", "alone,dynamic"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    (r,) = report["repositories"]
    assert r["name"] == "project" and [f["name"] for f in r["per_file"]] == sorted(d.name for d in repo_docs())
    assert r["bytes"] == report["total"]["bytes"] == sum(len(d.data) for d in repo_docs())
    assert set(r["modes"]) == {"alone", "dynamic"} and r["modes"]["alone"]["cpu_seconds"] > 0
    assert "xz -9e, whole repository" in r["compressors"]


def test_eval_repo_cli_prints_tables(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--threads", "1", "--preset", "tiny", "--repo", str(repo), "--no-baselines"]) == 0
    out = capsys.readouterr().out
    assert "pkg/m2.py" in out and all(m in out for m in MODES)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--repo", "/nonexistent/dir"], "no such directory"),
        (["--repo", "EMPTY"], "no usable .py files"),
        (["--repo", "REPO", "--modes", "alone,psychic"], "unknown mode"),
        (["--repo", "REPO", "--fim"], "does not combine"),
        (["--repo", "REPO", "--stride", "100"], "stride"),
        *(
            (["--repo", "REPO", "--modes", mode, "--dynamic-step", "64", "--dynamic-context", "32"], "--dynamic-step")
            for mode in ("dynamic", "dynamic+match")  # a step that reads less than it scores
        ),
    ],
)
def test_eval_repo_bad_input_is_one_line(
    extra: list[str], message: str, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no code here")
    extra = [str(empty) if a == "EMPTY" else str(repo) if a == "REPO" else a for a in extra]
    assert main(["eval", "--threads", "1", "--preset", "tiny", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
