"""Logits at byte t must depend on bytes 0..t only, at every scale and every length."""

import pytest
import torch

from multiscale_transformer.evaluation.causality import gradient_leak, perturbation_leak
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.model.scales import Span, n_tokens, visible

from .conftest import FEATURES, OPTIONS, make_model
from .leaky import make_leaky


def assert_causal(model: MultiScaleTransformer, lengths: list[int]) -> None:
    with torch.no_grad():
        leak = perturbation_leak(model, model.config.vocab_size, lengths, cuts_per_length=6, batch=3)
    assert leak.magnitude == 0.0, f"logits moved by {leak.magnitude} at position {leak.position} (T={leak.length})"
    for T in lengths[:3]:
        grad = gradient_leak(model, model.tok_emb, T, positions=range(0, T - 1, max(1, T // 7)))
        assert grad.magnitude == 0.0, f"gradient {grad.magnitude} from the future into position {grad.position}"


def test_tiny_is_causal_at_every_length_class() -> None:
    model = make_model("tiny")
    assert_causal(model, [1, 2, 3, 4, 5, 7, 8, 9, 13, 31, 64, 127, 128])


def test_every_shape_feature_is_causal() -> None:
    model = make_model("tiny", seed=3, **FEATURES)
    assert_causal(model, [5, 6, 11, 16, 33, 63, 64])


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_every_architecture_option_is_causal(option: str) -> None:
    model = make_model("tiny", seed=3, **OPTIONS[option])
    assert_causal(model, [5, 6, 11, 16, 33, 63, 64])


def test_more_scales_are_causal() -> None:
    model = make_model("tiny", seed=4, downsample_factors=[1, 3, 8], max_seq_len=40)
    assert_causal(model, [1, 7, 8, 9, 23, 40])


def test_leaky_variant_fails_the_same_checks() -> None:
    model = make_leaky(make_model("tiny"))
    with pytest.raises(AssertionError, match="moved by"):
        assert_causal(model, [9, 16, 31])
    grad = gradient_leak(model, model.tok_emb, 16, positions=[4, 5, 6])
    assert grad.magnitude > 0


def test_span_end_bookkeeping() -> None:
    assert [n_tokens(T, 4) for T in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]
    # byte t reads coarse token t // 4, which ends at byte 4 * (t // 4) <= t
    span = Span.of([0], 10, 4)
    assert span is not None and (span.positions() * 4).tolist() == [[0, 4, 8]]
    mask = visible(torch.arange(10)[None], 4, 3)[0, 0]  # fine queries over coarse keys: (10, 3)
    assert mask[3].tolist() == [True, False, False]
    assert mask[4].tolist() == [True, True, False]
    assert mask.any(dim=1).all(), "every query sees at least token 0"
    # a decoding step: only the rows whose new byte ends a span form a token, the first at offset 0
    step = Span.of([7, 8, 12], 1, 4)
    assert step is not None and (step.rows, step.first, step.n, step.offset) == ([1, 2], [2, 3], 1, 0)
    # a chunk that starts mid-span: its first new token ends 1 byte in
    chunk = Span.of([3, 3], 6, 4)
    assert chunk is not None and (chunk.first, chunk.n, chunk.offset) == ([1, 1], 2, 1)
    with pytest.raises(ValueError, match="same position"):
        Span.of([0, 1], 4, 2)


def test_logits_do_not_depend_on_batch_neighbours() -> None:
    model = make_model("tiny")
    x = torch.randint(0, 256, (3, 21))
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
