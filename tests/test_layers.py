import pytest
import torch
from torch import nn

from multiscale_transformer.model.layers import FEW_ROWS, drop_packed, project


def linears(bias: bool) -> list[nn.Linear]:
    torch.manual_seed(0)
    return [nn.Linear(32, 48, bias=bias), nn.Linear(32, 48, bias=bias), nn.Linear(32, 16, bias=bias)]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 3, FEW_ROWS])
def test_packed_projection_equals_the_layers(bias: bool, rows: int) -> None:
    layers = linears(bias)
    x = torch.randn(rows, 1, 32)
    with torch.inference_mode():
        packed = project(x, *layers)
        assert hasattr(layers[0], "_packed_weights")  # the packed path ran
        for y, layer in zip(packed, layers, strict=True):
            assert y.shape == (rows, 1, layer.out_features)
            torch.testing.assert_close(y, layer(x), rtol=0, atol=1e-6)


def test_packed_copy_follows_weight_updates() -> None:
    layers = linears(False)
    x = torch.randn(1, 32)
    with torch.no_grad():
        project(x, *layers)
        layers[1].weight.mul_(2)  # an optimizer-style in-place update bumps the version
        torch.testing.assert_close(project(x, *layers)[1], layers[1](x), rtol=0, atol=1e-6)
        layers[2].weight.data.zero_()  # through .data the version does not change ...
        drop_packed(nn.ModuleList(layers))  # ... which is why every decoder starts by dropping packs
        assert not project(x, *layers)[2].any()


def test_training_and_long_inputs_use_the_layers_themselves() -> None:
    layers = linears(False)
    y = project(torch.randn(1, 32), *layers)
    assert all(t.requires_grad for t in y) and not hasattr(layers[0], "_packed_weights")
    with torch.no_grad():
        project(torch.randn(FEW_ROWS + 1, 32), *layers)
    assert not hasattr(layers[0], "_packed_weights")


class Scaled(nn.Linear):
    """A swapped-in layer that computes something else than its weight says (as a quantized one may)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_packed_copy_follows_swapped_layers() -> None:
    layers = linears(False)
    other, scaled = nn.Linear(32, 16, bias=False), Scaled(32, 16, bias=False)
    x = torch.randn(1, 32)
    with torch.inference_mode():
        project(x, *layers)
        layers[2] = other  # another layer in the same place: repacked
        torch.testing.assert_close(project(x, *layers)[2], other(x), rtol=0, atol=1e-6)
        scaled.weight = other.weight  # the same weight, so only the layer's identity tells them apart
        assert torch.equal(project(x, *layers[:2], scaled)[2], scaled(x))  # not a plain Linear: run as is
