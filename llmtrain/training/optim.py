"""AdamW with decay/no-decay groups and a guard that skips non-finite updates; LR schedules."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from llmtrain.config.schema import OptimConfig


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Weight decay on matrices only, unless ``decay_norms_and_embeddings`` (norms, biases, embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or "embeddings" in name or name.endswith(".bias")
        (no_decay if exempt and not cfg.decay_norms_and_embeddings else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


class GuardedAdamW(torch.optim.AdamW):
    """AdamW that skips the whole update (moments untouched) when any rank sees a non-finite
    gradient, or when the trainer asks it to (loss spike). ``skipped`` tells the trainer.

    DeepSpeed's ZeRO optimizers call ``step()`` once per parameter (sub-)group, so the trainer
    brackets one engine step with :meth:`begin_step` / :meth:`end_step`: a requested skip then
    applies to every group, and ``skipped`` reports a skip in any of them.
    """

    def __init__(self, params, **kw) -> None:
        super().__init__(params, **kw)
        self.skip_next = False
        self.skipped = False
        self._skip_all = False
        self._bracketed = False

    def begin_step(self, skip: bool = False) -> None:
        self._bracketed, self._skip_all, self.skipped = True, skip, False

    def end_step(self) -> bool:
        """Close the bracket; True when any group's update of this step was skipped."""
        self._bracketed = self._skip_all = False
        return self.skipped

    def _grads_finite(self) -> bool:
        distributed = dist.is_available() and dist.is_initialized()
        # NCCL only reduces CUDA tensors; staying on the device also avoids a sync per tensor
        device = "cuda" if distributed and dist.get_backend() == "nccl" else "cpu"
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        ok = torch.ones((), dtype=torch.float32, device=device)
        if grads:
            # one read of every gradient (a fused norm per tensor list) and one isfinite over the sum of
            # the norms, instead of an isfinite kernel and a full-size boolean tensor per gradient
            norms = torch._foreach_norm(grads)
            same = all(n.device == norms[0].device and n.dtype == torch.float32 for n in norms)
            total = torch.stack(norms).sum() if same else torch.stack([n.float().to(device) for n in norms]).sum()
            ok = torch.isfinite(total).to(device, torch.float32)
        if distributed:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)  # every rank skips together
        return bool(ok.item())

    @torch.no_grad()
    def step(self, closure: Callable | None = None):  # type: ignore[override]
        finite = self._grads_finite()
        skip = self.skip_next or self._skip_all or not finite
        self.skipped = (self.skipped and self._bracketed) or skip
        self.skip_next = False
        if skip:
            return None
        return super().step(closure)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> GuardedAdamW:
    # foreach=None: torch's choice, the multi-tensor kernels on CUDA and the per-tensor loop on CPU, where
    # the foreach ops are a slower loop that allocates every intermediate for all tensors at once (the
    # two give bit-identical updates: tests/unit/training/test_optim.py)
    return GuardedAdamW(param_groups(model, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                        foreach=None)


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based) for the chosen schedule."""
    floor = cfg.min_lr / cfg.lr
    warm = min(cfg.warmup_steps, max_steps)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "wsd":
        decay_steps = max(1, round(cfg.decay_fraction * max_steps))
        start = max(warm, max_steps - decay_steps)
        if step < start:
            return 1.0
        frac = min(1.0, (step - start + 1) / max(1, max_steps - start))
        return 1.0 - (1.0 - floor) * frac
    frac = min(1.0, (step - warm) / max(1, max_steps - warm))
    if cfg.schedule == "linear":
        return 1.0 - (1.0 - floor) * frac
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))  # cosine


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, max_steps))
