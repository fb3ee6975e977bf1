import pytest
import torch

from multiscale_transformer.errors import UserError
from multiscale_transformer.generation.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    infill_filter,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from multiscale_transformer.model.vocab import EOS_ID


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


def _probs_logits(*probs: float) -> torch.Tensor:
    """Logits (1, 258) whose softmax gives bytes 0, 1, ... these probabilities and EOS the rest; other ids -inf."""
    logits = torch.full((1, 258), float("-inf"))
    logits[0, : len(probs)] = torch.tensor(probs).log()
    logits[0, EOS_ID] = torch.tensor(1.0 - sum(probs)).log()
    return logits


def test_the_infill_sampler_ends_where_the_end_has_a_real_chance_or_no_byte_is_likely() -> None:
    """llama.cpp's infill sampler, on distributions whose outcome is known by hand."""
    kept = lambda logits: set(torch.isfinite(infill_filter(logits))[0].nonzero().flatten().tolist())  # noqa: E731
    # 3 candidates: EOS at 0.1 > 0.9 / (3 * 3): EOS alone
    assert kept(_probs_logits(0.6, 0.3)) == {EOS_ID}
    # 4 candidates, EOS 0.02 (3 * 4 * 0.02 = 0.24 < 0.98): text >= 0.2 stays with EOS, 0.08 goes;
    # renormalised over 0.7 + 0.2 + 0.02, 0.2 is 0.217 < 1/3: dropped in the second pass
    assert kept(_probs_logits(0.7, 0.2, 0.08)) == {0, EOS_ID}
    # every byte below 0.2 (and EOS 0.01 too small to win outright among 7): EOS
    assert kept(_probs_logits(0.19, 0.18, 0.17, 0.16, 0.15, 0.14)) == {EOS_ID}
    # EOS excluded before (top-k) and nothing likely: EOS all the same, as llama.cpp ends with EOT
    none = _probs_logits(0.19, 0.18, 0.17, 0.16, 0.15, 0.14)
    none[0, EOS_ID] = float("-inf")
    assert kept(none) == {EOS_ID}
    # sampling with it: the forced EOS is what comes out, greedy or not
    params = SamplingParams(1.0, None, None, 1.0, infill=True)
    assert sample_next(_probs_logits(0.6, 0.3), torch.empty(1, 0, dtype=torch.long), params).item() == EOS_ID
    greedy = SamplingParams(0.0, 40, 0.99, 1.0, infill=True)
    assert sample_next(_probs_logits(0.6, 0.3), torch.empty(1, 0, dtype=torch.long), greedy).item() == EOS_ID
    assert sample_next(_probs_logits(0.9, 0.09), torch.empty(1, 0, dtype=torch.long), greedy).item() == 0
