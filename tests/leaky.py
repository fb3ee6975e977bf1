"""A deliberately leaky model, for showing that the causality checks bite. Never a user option."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.model.scales import Downsample, Span


class UnshiftedDownsample(Downsample):
    """Pools bytes j*k .. j*k+k-1 into token j, which byte j*k then reads: k-1 future bytes leak."""

    def forward(self, x: torch.Tensor, before: torch.Tensor | None, span: Span) -> torch.Tensor:
        R, _, d = x.shape
        padded = F.pad(x, (0, 0, 0, span.n * self.k))  # (R, T + n*k, d)
        window = padded[:, span.offset : span.offset + span.n * self.k]  # starts AT the token's end
        return self.proj(window.reshape(R, span.n, self.k * d))


def make_leaky(model: MultiScaleTransformer) -> MultiScaleTransformer:
    """Swap every pooling module for its unshifted twin, keeping the weights."""
    for i, module in enumerate(model.down):
        if isinstance(module, Downsample):
            twin = UnshiftedDownsample(model.config.d_model, module.k)
            twin.load_state_dict(module.state_dict())
            model.down[i] = twin
    return model
