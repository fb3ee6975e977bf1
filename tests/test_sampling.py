import pytest
import torch

from multiscale_transformer.errors import UserError
from multiscale_transformer.generation.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    sample_next,
    top_k_filter,
    top_p_filter,
)


def test_top_k_keeps_k_largest() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]])
    out = top_k_filter(logits, 2)
    assert torch.isinf(out[0, [0, 2]]).all() and out[0, 1] == 5.0 and out[0, 3] == 4.0
    assert torch.equal(top_k_filter(logits, 0), logits)


def test_top_p_keeps_smallest_nucleus() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = top_p_filter(probs.log(), 0.75)
    assert torch.isfinite(out[0, :2]).all() and torch.isinf(out[0, 2:]).all()
    # the top id survives even when it alone exceeds p
    assert torch.isfinite(top_p_filter(probs.log(), 0.1)[0, 0])
    assert torch.isinf(top_p_filter(probs.log(), 0.1)[0, 1:]).all()


def test_repetition_penalty_is_ctrl_style() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]]


def test_greedy_and_seeded_sampling() -> None:
    logits = torch.randn(4, 258)
    greedy = sample_next(logits, torch.empty(4, 0, dtype=torch.long), SamplingParams(0.0, None, None, 1.0))
    assert torch.equal(greedy, logits.argmax(-1))
    params = SamplingParams(1.0, 40, 0.9, 1.0)
    a = sample_next(logits, torch.empty(4, 0, dtype=torch.long), params, torch.Generator().manual_seed(7))
    b = sample_next(logits, torch.empty(4, 0, dtype=torch.long), params, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    top40 = torch.topk(logits, 40).indices
    assert all(a[i] in top40[i] for i in range(4))


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_p": 0.0}, {"top_k": -2}, {"repetition_penalty": 0}])
def test_bad_sampling_values(kwargs: dict) -> None:
    with pytest.raises(UserError):
        SamplingParams(**kwargs)
