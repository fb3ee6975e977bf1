"""The folded layers (model/layers.py) on weights a trained model has: RMSNorm gains folded into
the projections, a fusion that weighs the scales; and when the folded copy is remade."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multiscale_transformer.generation.cached import CachedDecoder
from multiscale_transformer.model.layers import RMSNorm, forget_packed, inv_rms

from .conftest import FEATURES, OPTIONS, make_model
from .test_cached import assert_decoders_agree, assert_rows_at_different_positions_agree


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter away from its initial value: a fresh model's norm gains are all 1, its
    fusion weights 0, and folding a gain of 1 into a projection would prove nothing."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for p in module.parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen)
                p.add_(noise * (0.3 if isinstance(module, RMSNorm) or p.dim() == 1 else 0.02))
        assert model.fusion is None or model.fusion.weight.abs().min() > 0
    return model


CASES = {**OPTIONS, "published": FEATURES}


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


def test_folded_weights_follow_in_place_updates() -> None:
    model = make_model("tiny")
    block = model.stacks[0][0]
    with torch.no_grad():
        packed = block.weights()
        assert block.weights() is packed  # unchanged weights: the same copy, no refolding
        wq = block.attn.wq.weight
        wq.mul_(2)  # an optimizer-style in-place update bumps the version
        refolded = block.weights()
        assert refolded is not packed
        torch.testing.assert_close(refolded.qkv.weight[:, : wq.shape[0]], wq.t())  # gain 1
        wq.data.zero_()  # through .data the version does not change ...
        assert block.weights() is refolded
        forget_packed(model)  # ... which is why every decoder starts by forgetting the copy
        assert not block.weights().qkv.weight[:, : wq.shape[0]].any()
        wq.data.fill_(1.0)
        CachedDecoder(model)  # a new decoder folds the weights as they are now
        assert block.weights().qkv.weight[:, : wq.shape[0]].eq(1).all()
    folded = block.weights()  # autograd recording: made anew, so gradients reach the parameters
    assert folded.qkv.weight.requires_grad and folded is not block.weights()


class Scaled(nn.Linear):
    """A swapped-in layer that computes something else than its weight says (as a quantized one may)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_a_swapped_in_layer_is_refused_not_run_wrong() -> None:
    model = make_model("tiny")
    model.stacks[0][0].attn.wq = Scaled(model.config.d_model, model.config.d_model, bias=False)
    with pytest.raises(TypeError, match=r"plain nn\.Linear weights, not Scaled"):
        model(torch.tensor([[1, 2, 3]]))
