"""The callback seam: everything the loop does besides forward, backward and step.

Guards, preemption, metrics, evaluation and early exit are one small class each; the loop calls the
hooks below in order and does not grow with each feature. Code outside the package (a test entry
module, a user's script) adds its own with :func:`add_callback_factory` before the run starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LoopState:
    """What callbacks may read about the run (the loop owns and updates it)."""

    step: int  # optimizer steps completed
    max_steps: int
    first_step: int  # the step this invocation started (or resumed) at
    world_size: int
    rank: int
    consumed_tokens: int = 0
    skipped_steps: int = 0
    data_checksum: int = 0
    losses: dict[int, float] = field(default_factory=dict)
    last_checkpoint: Any = None  # Path | None


@dataclass
class StepOutcome:
    """One completed optimizer step, as every rank agrees on it."""

    loss: float  # mean over ranks and micro batches (may be non-finite)
    lr: float
    grad_norm: float | None
    skipped: bool  # the optimizer dropped the update (non-finite gradients, spike)
    spike: bool
    step_time_s: float
    tokens: int  # tokens (or examples) the loss averaged over, all ranks
    input_tokens: int = 0  # tokens the model processed, all ranks: padding excluded (throughput, MFU)


@dataclass
class StopRequest:
    """Why a callback wants the run to end after a checkpoint, and with which exit code."""

    reason: str
    exit_code: int = 0


class Callback:
    """Override what you need; every hook has a no-op default. Hooks run on every rank."""

    def on_train_start(self, state: LoopState) -> None:
        """Before the first step of this invocation (after a resume)."""

    def on_micro_loss(self, loss: torch.Tensor, state: LoopState) -> torch.Tensor:
        """The loss of one micro batch of step ``state.step + 1``, before backward; may replace it."""
        return loss

    def judge_loss(self, loss: float, state: LoopState) -> str | None:
        """Once the step's loss is known, before the update: None (fine), ``"flag"`` (an anomaly,
        reported as a spike) or ``"skip"`` (also drop this step's update)."""
        return None

    def wants_stop(self, state: LoopState) -> bool:
        """A local reason to stop after step ``state.step + 1``; the loop stops if any rank has one."""
        return False

    def stop(self, state: LoopState) -> StopRequest:
        """Called on every rank once any rank's :meth:`wants_stop` was true, after the checkpoint."""
        return StopRequest(f"stopped by {type(self).__name__}")

    def on_step_end(self, state: LoopState, outcome: StepOutcome) -> None:
        """After the optimizer step; may raise to end the run."""

    def allows_checkpoint(self, state: LoopState) -> bool:
        """False to hold back periodic checkpoints (e.g. inside a run of non-finite steps)."""
        return True

    def on_states_saved(self, state: LoopState) -> None:
        """Inside a save, after the engine's states and before the metadata that commits it."""

    def on_after_step(self, state: LoopState) -> None:
        """After the step is complete: logged, evaluated and, if due, checkpointed."""

    def on_fit_end(self, state: LoopState) -> None:
        """After the last step (train.max_steps reached), before the final checkpoint."""

    def on_train_end(self, state: LoopState) -> None:
        """On the way out, whatever the outcome (also after an exception)."""


CallbackFactory = Callable[[Any], Callback]  # (Trainer) -> Callback
_EXTRA: list[CallbackFactory] = []


def add_callback_factory(factory: CallbackFactory) -> None:
    """Install a callback in every Trainer built later in this process (its hooks run last)."""
    _EXTRA.append(factory)


def extra_callback_factories() -> list[CallbackFactory]:
    return list(_EXTRA)
