import pytest
import torch

from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.model import MultiScaleTransformer

from .conftest import FEATURES, OPTIONS, make_model


@pytest.mark.parametrize("T", [1, 2, 3, 5, 64, 128])
def test_forward_shapes_any_length(T: int) -> None:
    model = make_model("tiny")
    logits = model(torch.randint(0, 258, (2, T)))
    assert logits.shape == (2, T, 258)
    assert torch.isfinite(logits).all()


def test_length_beyond_context_is_an_error() -> None:
    model = make_model("tiny")
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 129, dtype=torch.long))


def test_head_is_tied_to_embedding() -> None:
    model = make_model("tiny")
    names = [n for n, _ in model.named_parameters()]
    assert not any("lm_head" in n for n in names)
    with torch.no_grad():
        model.tok_emb.weight[65].zero_()
    logits = model(torch.tensor([[1, 2, 3]]))
    assert (logits[..., 65] == 0).all()


def test_dropout_only_in_training() -> None:
    model = make_model("tiny", dropout=0.3)
    x = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_fine_only_path_ignores_coarse_scales() -> None:
    model = make_model("tiny")
    x = torch.randint(0, 256, (1, 20))
    before_full, before_fine = model(x), model(x, fine_only=True)
    with torch.no_grad():
        for p in list(model.stacks[1].parameters()) + list(model.cross.parameters()):
            p.add_(0.5)
    assert torch.equal(model(x, fine_only=True), before_fine)
    assert not torch.allclose(model(x), before_full)


def test_single_scale_model_runs() -> None:
    cfg = ModelConfig.from_name("tiny").flat()
    model = MultiScaleTransformer(cfg).eval()
    assert model.fusion is None and len(model.cross) == 0
    assert model(torch.randint(0, 256, (1, 9))).shape == (1, 9, 258)


def test_one_training_step_lowers_loss() -> None:
    model = make_model("tiny").train()
    x = torch.tensor([list(b"def add(a, b):\n    return a + b\n" * 3)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("case", sorted({**OPTIONS, "published": FEATURES}))
def test_every_parameter_reaches_the_loss(case: str) -> None:
    """No layer is computed and then dropped: every parameter gets a gradient (a wiring that keeps
    only the last of two cross blocks into one scale fails here)."""
    model = make_model("tiny", seed=3, **{**FEATURES, **OPTIONS.get(case, {})}).train()
    with torch.no_grad():  # a zero-initialised fusion passes no gradient to what feeds it but itself
        if model.fusion is not None:
            model.fusion.weight.normal_(0, 0.02)
    x = torch.randint(0, 256, (2, 33))
    model(x).logsumexp(-1).mean().backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


@pytest.mark.parametrize(
    ("n", "m", "window", "query_step", "key_step", "offset"),
    [(37, 37, 8, 1, 1, 0), (37, 10, 8, 1, 4, 0), (9, 37, 16, 4, 1, 0), (64, 32, 16, 1, 2, 0), (5, 5, 8, 1, 1, 0),
     (30, 45, 8, 1, 1, 15), (20, 12, 16, 1, 4, 27), (6, 40, 16, 4, 1, 3), (3, 20, 8, 1, 2, 7)],
)  # fmt: skip
@pytest.mark.parametrize("block", [64, 2, 1])
def test_local_attention_is_the_windowed_mask(
    n: int, m: int, window: int, query_step: int, key_step: int, offset: int, block: int
) -> None:
    """Blocked local attention equals attention with the full (n, m) mask of the same rule: whole
    windows per block (block 64) or split into several (2, 1), from key 0 or extending a cached
    prefix (an offset: the queries start after the keys, as in a continued prefill), without
    autograd and while it records (another layout of the same blocks)."""
    from multiscale_transformer.model.attention import Local, _splits, attend
    from multiscale_transformer.model.scales import may_read

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, length, 8, generator=gen) for length in (n, m, m))
    query_ends = (offset + torch.arange(n)) * query_step
    mask = may_read(query_ends, torch.arange(m) * key_step, window)
    assert mask.any(-1).all()
    local = Local(window, query_step, key_step, offset, block)
    assert _splits(local) > 1 or block == 64  # the small blocks split the window
    full = attend(q, k, v, mask)
    torch.testing.assert_close(attend(q, k, v, local), full)  # bands as views, blocks of `block` queries
    recorded = attend(q.requires_grad_(), k, v, local)  # bands as copies, whole windows
    torch.testing.assert_close(recorded.detach(), full)
    recorded.sum().backward()
    assert q.grad is not None and q.grad.isfinite().all()
    if window < (offset + n) * query_step:  # the window matters: without it the answer differs
        assert not torch.allclose(attend(q, k, v, may_read(query_ends, torch.arange(m) * key_step)), full)
