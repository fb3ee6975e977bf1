import itertools
import math

import pytest
import torch
from torch import nn

from multiscale_transformer.training.optim import build_optimizer, param_groups
from multiscale_transformer.training.schedule import lr_at

from .conftest import make_model


def test_lion_step_matches_the_paper() -> None:
    """Chen et al. 2023, Algorithm 2: c = b1*m + (1-b1)*g; p -= lr*(sign(c) + wd*p); m = b2*m + (1-b2)*g."""
    torch.manual_seed(0)
    layer = nn.Linear(5, 3, bias=False)
    lr, wd, b1, b2 = 0.01, 0.5, 0.9, 0.99
    opt = build_optimizer(layer, "lion", lr=lr, weight_decay=wd, betas=(b1, b2))
    p0 = layer.weight.detach().clone()
    m = torch.zeros_like(p0)
    for _ in range(3):
        g = torch.randn_like(p0)
        layer.weight.grad = g.clone()
        opt.step()
        update = torch.sign(b1 * m + (1 - b1) * g)
        p0 = p0 * (1 - lr * wd) - lr * update
        m = b2 * m + (1 - b2) * g
        torch.testing.assert_close(layer.weight.detach(), p0, rtol=0, atol=1e-7)


def test_weight_decay_only_on_matrices() -> None:
    model = make_model()
    decay, no_decay = param_groups(model, 0.3)
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    # A 1-D norm gain must not shrink under Lion's decay when its gradient is zero.
    opt = build_optimizer(model, "lion", lr=0.1, weight_decay=1.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    gain = model.norm_f.weight.detach().clone()
    emb = model.tok_emb.weight.detach().clone()
    opt.step()
    assert torch.equal(model.norm_f.weight, gain)
    torch.testing.assert_close(model.tok_emb.weight.detach(), emb * 0.9)


@pytest.mark.parametrize("name", ["lion", "adamw", "sgd"])
def test_each_optimizer_lowers_the_loss(name: str) -> None:
    torch.manual_seed(0)
    model = make_model().train()
    x = torch.randint(0, 256, (4, 33))
    opt = build_optimizer(model, name)
    losses = []
    for _ in range(8):
        logits = model(x[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_lr_schedule() -> None:
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    values = [lr_at(s, 1.0, 10, 100) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(values))
