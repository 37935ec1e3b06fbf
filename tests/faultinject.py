"""Test-only fault injection for the training loop, read from the ``LLMTRAIN_FAULT`` variable.

It lives in the tests, not in the package: :mod:`fault_entry` (run as ``python tests/fault_entry.py
train ...``, also under torchrun) installs :class:`FaultInjector` through the loop's callback seam
(:func:`llmtrain.training.callbacks.add_callback_factory`) and then runs the normal CLI. The failure
tests (tests/integration/faults/) use it to make a crash, a hang, a NaN or a spike happen at an exact
step, so each recovery path is tested deterministically rather than by racing a signal against a
fast CPU run. The value is a comma-separated list of ``name=value`` items:

``kill_at_step=N``        SIGKILL this process after step N (and its checkpoint, if one is due)
``stall_at_step=N``       block forever after step N: a hung rank, for the collective timeout
``stall_in_data_at_step=N`` block forever while loading the first micro batch of step N (a hung loader)
``first_step_delay_s=S``  sleep S seconds in the first step of this invocation (a slow warm-up)
``eval_delay_s=S``        sleep S seconds at the start of every evaluation (a slow evaluation)
``nan_loss_steps=A-B``    the loss (and so every gradient) is NaN in steps A..B (``A-``: from A on)
``nan_grad_steps=A-B``    the loss stays finite but every gradient is NaN in steps A..B
``spike_steps=A-B``       the loss of steps A..B is multiplied by 20 (a loss spike)
``step_delay_s=S``        sleep S seconds after every step (time for an external signal to land)
``save_delay_s=S``        sleep S seconds inside every save, after DeepSpeed's states and before
                          ``trainer_state.json`` (a window for a second signal during a save)
``stall_in_save_at_step=N`` block forever at that point of the save of step N (kill it half-way)
``conversion_delay_s=S``  sleep S seconds before converting a checkpoint for another world size
                          (rank 0's universal conversion; the other ranks wait for it)
``rank=R``                apply the items above only on global rank R (default: every rank)

Steps are 1-based, as logged; ``A`` alone means the single step A.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import torch

from llmtrain.training.callbacks import Callback, LoopState

ENV_VAR = "LLMTRAIN_FAULT"
SPIKE_FACTOR = 20.0
_INT_ITEMS = ("kill_at_step", "stall_at_step", "stall_in_save_at_step", "stall_in_data_at_step", "rank")
_FLOAT_ITEMS = ("step_delay_s", "save_delay_s", "first_step_delay_s", "eval_delay_s", "conversion_delay_s")
_RANGE_ITEMS = ("nan_loss_steps", "nan_grad_steps", "spike_steps")
_NEVER = (0, -1)


def _step_range(text: str) -> tuple[int, int]:
    """``"5"`` -> (5, 5), ``"5-7"`` -> (5, 7), ``"5-"`` -> (5, a huge step)."""
    first, dash, last = text.partition("-")
    if not dash:
        return int(first), int(first)
    return int(first), int(last) if last else 2**62


class _NanGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradients are not finite."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


@dataclass
class FaultPlan:
    kill_at_step: int = 0
    stall_at_step: int = 0
    stall_in_save_at_step: int = 0
    stall_in_data_at_step: int = 0
    nan_loss_steps: tuple[int, int] = _NEVER
    nan_grad_steps: tuple[int, int] = _NEVER
    spike_steps: tuple[int, int] = _NEVER
    step_delay_s: float = 0.0
    save_delay_s: float = 0.0
    first_step_delay_s: float = 0.0
    eval_delay_s: float = 0.0
    conversion_delay_s: float = 0.0
    rank: int = -1

    @classmethod
    def from_env(cls, rank: int, environ: dict[str, str] | None = None) -> FaultPlan:
        """The plan for this rank; an empty (no-op) plan when the variable is unset."""
        text = (environ if environ is not None else os.environ).get(ENV_VAR, "").strip()
        plan = cls()
        for item in filter(None, (s.strip() for s in text.split(","))):
            name, _, value = item.partition("=")
            if name in _INT_ITEMS:
                setattr(plan, name, int(value))
            elif name in _FLOAT_ITEMS:
                setattr(plan, name, float(value))
            elif name in _RANGE_ITEMS:
                setattr(plan, name, _step_range(value))
            else:
                raise ValueError(f"{ENV_VAR}: unknown item {item!r}; known: {', '.join(_INT_ITEMS + _FLOAT_ITEMS + _RANGE_ITEMS)}")
        return plan if plan.rank in (-1, rank) else cls()

    def on_loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """Called with the micro-batch loss of (1-based) step ``step`` before backward."""
        if self.nan_loss_steps[0] <= step <= self.nan_loss_steps[1]:
            return loss * float("nan")
        if self.nan_grad_steps[0] <= step <= self.nan_grad_steps[1]:
            return _NanGradient.apply(loss)
        if self.spike_steps[0] <= step <= self.spike_steps[1]:
            return loss * SPIKE_FACTOR
        return loss

    def after_step(self, step: int) -> None:
        """Called once step ``step`` is complete (logged and, if due, checkpointed)."""
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        if self.kill_at_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.stall_at_step == step:
            _block_forever()

    def loading(self, step: int) -> None:
        """Called before the loader hands out a micro batch of (1-based) step ``step``."""
        if self.stall_in_data_at_step == step:
            _block_forever()

    def during_save(self, step: int) -> None:
        if self.save_delay_s:
            time.sleep(self.save_delay_s)
        if self.stall_in_save_at_step == step:
            _block_forever()


def _block_forever() -> None:
    while True:
        time.sleep(60)


class FaultInjector(Callback):
    """The plan of this rank as a training-loop callback."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan

    @classmethod
    def for_trainer(cls, trainer) -> FaultInjector:
        injector = cls(FaultPlan.from_env(trainer.env.rank))
        injector.install(trainer)
        return injector

    def install(self, trainer) -> None:
        """Faults inside the loader and the evaluation, which the callback hooks do not reach."""
        plan, state, loader = self.plan, trainer.state, trainer.task.train_loader
        if plan.stall_in_data_at_step:
            next_batch = loader.next_batch

            def stalling_next_batch():
                plan.loading(state.step + 1)
                return next_batch()

            loader.next_batch = stalling_next_batch
        if plan.eval_delay_s:
            model, evaluating = trainer.task.model, [False]

            def delay_first_eval_forward(module, args):
                # the model's own flag: the evaluation puts it in eval mode, each training step back
                if module.training:
                    evaluating[0] = False
                elif not evaluating[0]:
                    evaluating[0] = True
                    time.sleep(plan.eval_delay_s)

            model.register_forward_pre_hook(delay_first_eval_forward)

    def on_micro_loss(self, loss: torch.Tensor, state: LoopState) -> torch.Tensor:
        if self.plan.first_step_delay_s and state.step == state.first_step:
            time.sleep(self.plan.first_step_delay_s)
        return self.plan.on_loss(loss, state.step + 1)

    def on_states_saved(self, state: LoopState) -> None:
        self.plan.during_save(state.step)

    def on_after_step(self, state: LoopState) -> None:
        self.plan.after_step(state.step)
