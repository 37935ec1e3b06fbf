"""The engine seam: what the training loop drives, whatever owns the parameters and optimizer.

The loop (:mod:`llmtrain.training.loop`) calls only these methods, so another engine (FSDP,
a single-device engine, async checkpointing) is one new implementation of :class:`Engine`, not an
edit of the loop, the checkpoint manager and the optimizer. :mod:`llmtrain.engine.deepspeed` is
the one implementation today and the only module of the package that imports DeepSpeed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

Batch = dict[str, torch.Tensor]


@dataclass
class StepReport:
    """What one optimizer step did: skipped (non-finite or asked to), gradient norm, learning rate."""

    skipped: bool
    grad_norm: float | None
    lr: float


class Engine(Protocol):
    """Owns the trained module's parameters, gradients and optimizer state on this rank."""

    config: dict[str, Any]  # the engine's own settings, saved beside every checkpoint
    micro_steps_per_step: int

    @property
    def loss_module(self) -> nn.Module:
        """``forward(batch) -> (mean loss, tokens)``; evaluators call it (``.model`` is the model)."""
        ...

    def train(self) -> None: ...
    def eval(self) -> None: ...

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss of one micro batch and the number of tokens (or examples) it averaged over."""
        ...

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate gradients of one micro batch (reduced across ranks at the step boundary)."""
        ...

    def optimizer_step(self, *, skip: bool = False) -> StepReport:
        """Apply the accumulated gradients (or drop them when ``skip``); clip, schedule the LR."""
        ...

    def save(self, run_dir: Path, tag: str) -> None:
        """Write this rank's shard of parameters and optimizer state into ``run_dir/tag``."""
        ...

    def load(self, step_dir: Path, *, reshard: bool) -> None:
        """Restore what :meth:`save` wrote; ``reshard`` when the world size or stage changed."""
        ...

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The whole model's weights on rank 0 (None elsewhere); a collective on every rank."""
        ...
