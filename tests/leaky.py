"""A deliberately leaky model, for showing that the causality checks bite. Never a user option."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.model.scales import Downsample, n_tokens


class UnshiftedDownsample(Downsample):
    """Pools bytes j*k .. j*k+k-1 into token j, which byte j*k then reads: k-1 future bytes leak."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        n = n_tokens(T, self.k)
        padded = F.pad(x, (0, 0, 0, n * self.k - T))  # (B, n*k, d)
        return self.proj(padded.reshape(B, n, self.k * d))


def make_leaky(model: MultiScaleTransformer) -> MultiScaleTransformer:
    """Swap every pooling module for its unshifted twin, keeping the weights."""
    for i, module in enumerate(model.down):
        if isinstance(module, Downsample):
            twin = UnshiftedDownsample(model.config.d_model, module.k, model.config.bias)
            twin.load_state_dict(module.state_dict())
            model.down[i] = twin
    return model
