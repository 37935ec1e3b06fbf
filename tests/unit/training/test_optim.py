"""LR schedules, parameter groups and the non-finite guard of the optimizer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llmtrain.config.schema import OptimConfig
from llmtrain.training.optim import GuardedAdamW, build_optimizer, lr_factor, param_groups


def cfg(**kw) -> OptimConfig:
    base = {"lr": 1.0, "min_lr": 0.1, "warmup_steps": 10, "schedule": "cosine"}
    return OptimConfig(**{**base, **kw})


def test_warmup_then_cosine_to_min_lr():
    c = cfg()
    assert lr_factor(0, c, 110) == pytest.approx(0.1)
    assert lr_factor(9, c, 110) == pytest.approx(1.0)
    assert lr_factor(10, c, 110) == pytest.approx(1.0)
    assert lr_factor(60, c, 110) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, c, 110) == pytest.approx(0.1)


def test_linear_constant_and_wsd():
    assert lr_factor(60, cfg(schedule="linear"), 110) == pytest.approx(1 - 0.9 * 0.5)
    assert lr_factor(100, cfg(schedule="constant"), 110) == 1.0
    wsd = cfg(schedule="wsd", decay_fraction=0.2)  # 22 decay steps: stable until step 88
    assert lr_factor(50, wsd, 110) == 1.0
    assert lr_factor(87, wsd, 110) == 1.0
    assert lr_factor(109, wsd, 110) == pytest.approx(0.1)
    assert 0.1 < lr_factor(98, wsd, 110) < 1.0


def test_no_weight_decay_on_norms_and_embeddings():
    model = nn.ModuleDict({"tok_embeddings": nn.Embedding(10, 4), "proj": nn.Linear(4, 4), "norm": nn.LayerNorm(4)})
    groups = param_groups(model, OptimConfig(weight_decay=0.1))
    decay = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decay == {id(model["proj"].weight)}
    everything = param_groups(model, OptimConfig(weight_decay=0.1, decay_norms_and_embeddings=True))
    assert len(everything) == 1 and len(everything[0]["params"]) == 5


def test_guard_skips_non_finite_update_without_touching_moments():
    lin = nn.Linear(3, 2)
    opt = build_optimizer(lin, OptimConfig(lr=0.1, weight_decay=0.0))
    assert isinstance(opt, GuardedAdamW)
    lin(torch.ones(1, 3)).sum().backward()
    opt.step()
    before = {k: v.clone() for k, v in opt.state[lin.weight].items()}
    w = lin.weight.detach().clone()
    lin.weight.grad[0, 0] = float("nan")
    opt.step()
    assert opt.skipped
    assert torch.equal(lin.weight, w)
    assert all(torch.equal(opt.state[lin.weight][k], v) for k, v in before.items())
    lin.weight.grad.fill_(1.0)
    opt.skip_next = True  # loss-spike skip requested by the trainer
    opt.step()
    assert opt.skipped and torch.equal(lin.weight, w)
    opt.step()
    assert not opt.skipped and not torch.equal(lin.weight, w)


def test_the_update_is_bit_identical_to_the_multi_tensor_kernels():
    """build_optimizer leaves the kernel choice to torch (per-tensor on CPU): the same bits as foreach."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 50))
    twin = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 50))
    twin.load_state_dict(model.state_dict())
    c = OptimConfig(lr=3e-3, weight_decay=0.1)
    ours = build_optimizer(model, c)
    ref = GuardedAdamW(param_groups(twin, c), lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps, foreach=True)
    tokens = torch.randint(0, 50, (4, 9), generator=torch.Generator().manual_seed(1))
    for _ in range(4):
        for m, opt in ((model, ours), (twin, ref)):
            nn.functional.cross_entropy(m(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True))
