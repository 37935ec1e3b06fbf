"""The test-only fault plan (tests/faultinject.py): off by default, parsed exactly, limited to one rank when asked."""

from __future__ import annotations

import math

import pytest
import torch
from faultinject import SPIKE_FACTOR, FaultPlan


def test_unset_is_a_no_op():
    plan = FaultPlan.from_env(0, {})
    loss = torch.tensor(2.0, requires_grad=True)
    assert plan == FaultPlan() and plan.on_loss(loss, 1) is loss
    plan.after_step(1)
    plan.during_save(1)


def test_items_ranges_and_rank_filter():
    env = {"LLMTRAIN_FAULT": "nan_loss_steps=5-, spike_steps=3, nan_grad_steps=2-4, save_delay_s=0.5, rank=1"}
    plan = FaultPlan.from_env(1, env)
    assert plan.nan_loss_steps == (5, 2**62) and plan.spike_steps == (3, 3) and plan.nan_grad_steps == (2, 4)
    assert plan.save_delay_s == 0.5
    assert FaultPlan.from_env(0, env) == FaultPlan()  # another rank: nothing injected
    with pytest.raises(ValueError, match="unknown item 'explode=1'"):
        FaultPlan.from_env(0, {"LLMTRAIN_FAULT": "explode=1"})


def test_injected_losses_and_gradients():
    plan = FaultPlan.from_env(0, {"LLMTRAIN_FAULT": "spike_steps=1,nan_grad_steps=2,nan_loss_steps=3-"})
    w = torch.tensor(3.0, requires_grad=True)
    assert plan.on_loss(w * 2, 1).item() == 6.0 * SPIKE_FACTOR
    out = plan.on_loss(w * 2, 2)
    out.backward()
    assert out.item() == 6.0 and math.isnan(w.grad.item())  # finite loss, NaN gradient
    assert math.isnan(plan.on_loss(w * 2, 7).item())
