"""Property tests (hypothesis): every accepted sampling value gives a valid draw; any bytes in the
tokenizer and data pipeline give correct output or a clear, counted skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiscale_transformer.errors import UserError
from multiscale_transformer.generation.sampling import SamplingParams, adjust_logits, sample_next
from multiscale_transformer.training.data import collect_documents
from multiscale_transformer.training.tokenizer import ByteTokenizer

V = 258
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

extreme_floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from([0.0, 1e-45, 1e-38, 1e-30, 3e38, -3e38, 1e30, -1e30, float("inf"), float("-inf"), float("nan")]),
)


@st.composite
def logit_rows(draw: st.DrawFn) -> torch.Tensor:
    """Random logits at a drawn scale, some ids overwritten with extremes; at least one id usable."""
    scale = draw(st.sampled_from([1e-6, 1.0, 30.0, 1e20]))
    row = torch.randn(V, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16)))) * scale
    for token, value in draw(st.dictionaries(st.integers(0, V - 1), extreme_floats, max_size=V // 2)).items():
        row[token] = value
    usable = ~(row.isnan() | (row == float("-inf")))
    if not usable.any():
        row[draw(st.integers(0, V - 1))] = 0.0
    return row


@st.composite
def sampling_params(draw: st.DrawFn) -> SamplingParams:
    return SamplingParams(
        temperature=draw(st.one_of(st.just(0.0), st.floats(min_value=0, max_value=1e6), st.just(1e-300))),
        top_k=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=300))),
        top_p=draw(st.one_of(st.none(), st.floats(min_value=1e-300, max_value=1.0, exclude_min=False))),
        repetition_penalty=draw(st.one_of(st.floats(min_value=1e-300, max_value=1e300), st.just(1.0))),
    )


@FAST
@given(
    logits=logit_rows(),
    params=sampling_params(),
    history=st.lists(st.integers(min_value=0, max_value=V - 1), max_size=40),
    bias=st.dictionaries(st.integers(0, V - 1), st.floats(min_value=-100, max_value=100), max_size=5),
    frequency=st.floats(min_value=-2, max_value=2),
    presence=st.floats(min_value=-2, max_value=2),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_accepted_value_samples_a_usable_id(
    logits: torch.Tensor,
    params: SamplingParams,
    history: list[int],
    bias: dict[int, float],
    frequency: float,
    presence: float,
    seed: int,
) -> None:
    counts = torch.bincount(torch.tensor(history, dtype=torch.long), minlength=V).float()
    bias_row = torch.zeros(V)
    for token, value in bias.items():
        bias_row[token] = value
    adjusted = adjust_logits(logits, counts, frequency, presence, bias_row)
    token = int(
        sample_next(
            adjusted[None], torch.tensor([history], dtype=torch.long), params, torch.Generator().manual_seed(seed)
        )[0]
    )
    assert 0 <= token < V
    # The id drawn was usable: its logit was neither NaN nor -inf before sampling.
    assert not (torch.isnan(logits[token]) or logits[token] == float("-inf"))


def test_rows_with_nothing_to_sample_are_a_clear_error() -> None:
    nothing = torch.full((1, V), float("nan"))
    with pytest.raises(ValueError, match="no byte has a finite logit"):
        sample_next(nothing, torch.empty(1, 0, dtype=torch.long), SamplingParams())


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": float("nan")}, {"temperature": float("inf")}, {"repetition_penalty": float("inf")}],
)
def test_non_finite_parameters_are_refused(kwargs: dict) -> None:
    with pytest.raises(UserError):
        SamplingParams(**kwargs)


@FAST
@given(text=st.text())
def test_tokenizer_round_trips_any_text(text: str) -> None:
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text


@FAST
@given(data=st.binary(max_size=300))
def test_tokenizer_decodes_any_bytes(data: bytes) -> None:
    assert ByteTokenizer().decode(list(data)) == data.decode("utf-8", "replace")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(st.binary(max_size=200), min_size=1, max_size=5),
    records=st.lists(
        st.one_of(
            st.text(),  # includes lone surrogates, which JSON can carry as \\ud800
            st.integers(),
            st.none(),
            st.dictionaries(st.sampled_from(["content", "text", "path"]), st.one_of(st.text(), st.integers())),
        ),
        max_size=6,
    ),
)
def test_data_pipeline_takes_any_bytes_and_counts_what_it_skips(
    tmp_path_factory: pytest.TempPathFactory, files: list[bytes], records: list[object]
) -> None:
    root = tmp_path_factory.mktemp("any")
    for i, data in enumerate(files):
        (root / f"f{i}.py").write_bytes(data)
    lines = [json.dumps(r if isinstance(r, dict) else {"content": r}) for r in records]
    (root / "records.jsonl").write_text("\n".join(lines), encoding="utf-8")
    docs, skipped = collect_documents([root, root / "records.jsonl"])
    for doc in docs:
        doc.data.decode("utf-8")  # every document kept is valid UTF-8 text
        assert doc.data.strip() and b"\0" not in doc.data
    # Every file and every record is either a document or a counted skip; nothing vanishes.
    assert len(docs) + skipped.total == len(files) + len(records)


def test_a_jsonl_record_with_a_lone_surrogate_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"content": "ok = 1\\n"}\n{"content": "bad = \\"\\ud800\\"\\n"}\n', encoding="utf-8")
    docs, skipped = collect_documents([path])
    assert [d.data for d in docs] == [b"ok = 1\n"]
    assert skipped.counts == {"JSONL text that is not valid Unicode": 1}
