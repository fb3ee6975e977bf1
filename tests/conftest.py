from __future__ import annotations

import os

# As `axl` does (cli.main): OpenMP threads that spin while a sibling is descheduled make torch many
# times slower on a loaded machine (measured here: a 200-byte completion in 13.5 s instead of 1.9 s
# with the other core busy). Read once when torch loads, so set before the import below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.model import MultiScaleTransformer
from tests.browser import INSTALL_HINT, chromium_binary


@pytest.hookimpl(trylast=True)  # after `-m` has deselected what it leaves out
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `browser` drive a real Chromium: without one the run stops here, in one line that
    says how to install it, instead of skipping them (a skip would pass a run that checked no page)."""
    if chromium_binary() is None and any(item.get_closest_marker("browser") for item in items):
        raise pytest.UsageError(f"the playground tests need Chromium, which is not installed: {INSTALL_HINT}")


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def make_model(name: str = "tiny", seed: int = 0, **overrides: object) -> MultiScaleTransformer:
    torch.manual_seed(seed)
    return MultiScaleTransformer(ModelConfig.from_name(name, **overrides)).eval()


@pytest.fixture
def tiny() -> MultiScaleTransformer:
    return make_model("tiny")


# Every published shape feature at test size: 3 scales, several layers, 2 cross layers, odd head count.
FEATURES = {
    "d_model": 48,
    "n_heads": 3,
    "d_ff": 64,
    "n_layers_per_scale": 2,
    "n_cross_attn_layers": 2,
    "max_seq_len": 64,
}


# The architecture options (defaults off), each on top of every shape feature: causality, the
# cached decoder and the audit are proven for each, not only for the published architecture.
OPTIONS = {
    "coarse_input=fine": {**FEATURES, "coarse_input": "fine"},
    "layers_per_scale=1,2,3": {**FEATURES, "layers_per_scale": [1, 2, 3]},
    "post_fusion_layers=2": {**FEATURES, "post_fusion_layers": 2},
    "cross_pairs=coarse-to-fine": {**FEATURES, "cross_pairs": [[1, 0], [2, 0]]},
    "hourglass": {**FEATURES, "coarse_input": "fine", "post_fusion_layers": 1, "cross_pairs": [[2, 1], [1, 0]]},
    # windows much shorter than the context: blocked local attention in a full pass, windowed masks
    # in the cached decoder's prefill and steps
    "attention_window=8": {**FEATURES, "attention_window": 8, "post_fusion_layers": 1},
    "windows=8,16": {**FEATURES, "attention_window": 8, "coarse_window": 16, "coarse_input": "fine"},
}


@pytest.fixture
def featured() -> MultiScaleTransformer:
    return make_model("tiny", seed=1, **FEATURES)
