"""The decoder's one-token blocks (model/step.py) on weights a trained model has: RMSNorm gains
folded into the projections, a fusion that weighs the scales, biases; and when their packed copy
is remade."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multiscale_transformer.generation.cached import CachedDecoder
from multiscale_transformer.model.layers import RMSNorm
from multiscale_transformer.model.step import drop_step_weights, inv_rms, step_weights

from .conftest import FEATURES, OPTIONS, make_model
from .test_cached import assert_decoders_agree, assert_rows_at_different_positions_agree


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter away from its initial value: a fresh model's norm gains are all 1, its
    fusion weights and biases 0, and folding a gain of 1 into a projection would prove nothing."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for p in module.parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen)
                p.add_(noise * (0.3 if isinstance(module, RMSNorm) or p.dim() == 1 else 0.02))
        assert model.fusion is None or model.fusion.weight.abs().min() > 0
    return model


CASES = {**OPTIONS, "bias": {**FEATURES, "bias": True}, "published": FEATURES}


@pytest.mark.parametrize("case", sorted(CASES))
def test_trained_like_weights_decode_as_the_full_pass(case: str) -> None:
    model = trained_like(make_model("tiny", seed=4, **CASES[case]))
    data = list(b"def fibonacci(n):\n    if n < 2:\n        return n\n")
    for length in (1, 6, 9):  # one row (the unmasked, Python-float path) and one of two rows
        assert_decoders_agree(model, data[:length], data[length : length + 9])
        assert_decoders_agree(model, data[:length], data[length : length + 9], row=1, batch=2)
    assert_rows_at_different_positions_agree(model, data)


def test_inverse_rms_of_one_row_and_of_several() -> None:
    x, gain = torch.randn(3, 48), torch.rand(48) + 0.5
    expected = F.rms_norm(x, (48,), gain, 1e-5)
    torch.testing.assert_close(x * inv_rms(x, 1e-5) * gain, expected)
    one = inv_rms(x[:1], 1e-5)
    assert isinstance(one, float)  # one row: a Python float, applied by addmm's alpha
    torch.testing.assert_close(x[:1] * one * gain, expected[:1])


def test_packed_weights_follow_in_place_updates() -> None:
    model = make_model("tiny")
    packed = step_weights(model)
    assert step_weights(model) is packed  # unchanged weights: the same copy, no repacking
    wq = model.stacks[0][0].attn.wq.weight
    with torch.no_grad():
        wq.mul_(2)  # an optimizer-style in-place update bumps the version
    repacked = step_weights(model)
    assert repacked is not packed
    torch.testing.assert_close(repacked.stacks[0][0].qkv.weight[:, : wq.shape[0]], wq.t())  # gain 1
    wq.data.zero_()  # through .data the version does not change ...
    assert step_weights(model) is repacked
    drop_step_weights(model)  # ... which is why every decoder starts by dropping the copy
    assert not step_weights(model).stacks[0][0].qkv.weight[:, : wq.shape[0]].any()
    wq.data.fill_(1.0)
    CachedDecoder(model)  # a new decoder packs the weights as they are now
    assert step_weights(model).stacks[0][0].qkv.weight[:, : wq.shape[0]].eq(1).all()


class Scaled(nn.Linear):
    """A swapped-in layer that computes something else than its weight says (as a quantized one may)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_a_swapped_in_layer_is_refused_not_decoded_wrong() -> None:
    model = make_model("tiny")
    model.stacks[0][0].attn.wq = Scaled(model.config.d_model, model.config.d_model, bias=False)
    with pytest.raises(TypeError, match=r"plain nn\.Linear weights, not Scaled"):
        CachedDecoder(model)
