import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from multiscale_transformer.training.optim import MuonAdamW, build_optimizer, orthogonalize, param_groups
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


@pytest.mark.parametrize("name", ["lion", "adamw", "sgd", "muon"])
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


def test_orthogonalize_gives_about_the_polar_factor() -> None:
    """For g = U S V^T the result is U S' V^T with S' near 1: the singular vectors of g, flattened spectrum."""
    torch.manual_seed(0)
    for shape in [(40, 24), (24, 40), (32, 32)]:
        k = min(shape)
        u, _ = torch.linalg.qr(torch.randn(shape[0], k))  # (m, k) orthonormal columns
        v, _ = torch.linalg.qr(torch.randn(shape[1], k))  # (n, k)
        s = torch.linspace(0.5, 10.0, k)  # a 20x spread of singular values
        g = u @ torch.diag(s) @ v.T
        o = orthogonalize(g)
        assert o.shape == g.shape and o.dtype == g.dtype
        u, _, vh = torch.linalg.svd(g, full_matrices=False)
        core = u.T @ o @ vh.T  # (k, k): diagonal iff o shares g's singular vectors
        off = core - torch.diag(torch.diagonal(core))
        assert off.abs().max() < 1e-3
        assert torch.diagonal(core).min() > 0.6 and torch.diagonal(core).max() < 1.25


def test_muon_step_matches_torch_muon() -> None:
    """Our fp32 update against torch.optim.Muon (bfloat16 iteration) with the same hyper-parameters."""
    torch.manual_seed(0)
    ours_p = nn.Parameter(torch.randn(40, 24) * 0.1)
    ref_p = nn.Parameter(ours_p.detach().clone())
    ours = MuonAdamW([{"params": [ours_p], "weight_decay": 0.1, "use_muon": True}], lr=0.01)
    ref = torch.optim.Muon([ref_p], lr=0.01, weight_decay=0.1, momentum=0.95, adjust_lr_fn="match_rms_adamw")
    start = ours_p.detach().clone()
    for _ in range(3):
        g = torch.randn(40, 24)
        ours_p.grad, ref_p.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    d_ours, d_ref = ours_p.detach() - start, ref_p.detach() - start
    assert (d_ours - d_ref).norm() < 0.02 * d_ref.norm()  # bfloat16 rounding, nothing more


def test_adamw_part_matches_torch_adamw() -> None:
    torch.manual_seed(0)
    ours_model, ref_model = make_model(), make_model()
    groups = [
        {"params": [ours_model.tok_emb.weight], "weight_decay": 0.1, "use_muon": False},
        {"params": [ours_model.norm_f.weight], "weight_decay": 0.0, "use_muon": False},
    ]
    ours = MuonAdamW(groups, lr=3e-3, betas=(0.9, 0.95))
    ref = torch.optim.AdamW(
        [{"params": [ref_model.tok_emb.weight], "weight_decay": 0.1}, {"params": [ref_model.norm_f.weight]}],
        lr=3e-3,
        betas=(0.9, 0.95),
        weight_decay=0.0,
    )
    for _ in range(4):
        for m in (ours_model, ref_model):
            m.tok_emb.weight.grad = torch.ones_like(m.tok_emb.weight) * torch.randn(()).item()
            m.norm_f.weight.grad = torch.randn_like(m.norm_f.weight)
        ref_model.tok_emb.weight.grad.copy_(ours_model.tok_emb.weight.grad)
        ref_model.norm_f.weight.grad.copy_(ours_model.norm_f.weight.grad)
        ours.step()
        ref.step()
    torch.testing.assert_close(ours_model.tok_emb.weight, ref_model.tok_emb.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_model.norm_f.weight, ref_model.norm_f.weight, rtol=0, atol=1e-6)


def test_muon_trains_hidden_matrices_and_adamw_the_rest() -> None:
    model = make_model()
    opt = build_optimizer(model, "muon")
    muon, emb, gains = opt.param_groups
    assert muon["use_muon"] and not emb["use_muon"] and not gains["use_muon"]
    linears = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear) and m is not model.fusion}
    assert {id(p) for p in muon["params"]} == linears and all(p.dim() == 2 for p in muon["params"])
    adamw = {id(p) for p in emb["params"] + gains["params"]}
    assert id(model.tok_emb.weight) in adamw and id(model.fusion.weight) in adamw  # the head is tied to it
    assert all(p.dim() < 2 for p in gains["params"]) and gains["weight_decay"] == 0.0
    assert len(muon["params"]) + len(adamw) == len(list(model.parameters()))


def _muon_steps(model: nn.Module, opt: torch.optim.Optimizer, seeds: range) -> None:
    for seed in seeds:
        x = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(seed))
        logits = model(x[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_muon_state_dict_resumes_exactly(tmp_path: Path) -> None:
    """What the trainer's checkpoint does: save, load with weights_only=True, continue bit-identically."""
    model = make_model().train()
    opt = build_optimizer(model, "muon")
    _muon_steps(model, opt, range(3))
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "ckpt.pt")
    _muon_steps(model, opt, range(3, 6))

    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed = make_model(seed=5).train()
    resumed.load_state_dict(state["model"])
    resumed_opt = build_optimizer(resumed, "muon")
    resumed_opt.load_state_dict(state["optimizer"])
    for group in resumed_opt.param_groups:  # the trainer's schedule writes each step's lr like this
        group["lr"] = group["lr"]
    _muon_steps(resumed, resumed_opt, range(3, 6))
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_muon_follows_the_group_lr() -> None:
    """The schedule sets param_groups' lr; a zero lr must freeze every parameter, Muon and AdamW alike."""
    model = make_model().train()
    opt = build_optimizer(model, "muon")
    for group in opt.param_groups:
        group["lr"] = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    _muon_steps(model, opt, range(2))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
