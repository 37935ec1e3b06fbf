"""What the one training loop trains: the contract between objectives and the loop.

An objective (:mod:`llmtrain.objectives`) builds a :class:`TrainingTask`; the loop
(:mod:`llmtrain.training.loop`) only knows this dataclass, never which objective made it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from llmtrain.model.config import ModelConfig

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, Any]]


class BatchSource(Protocol):
    """Host batches for this rank; ``micro_steps_per_step`` of them make one optimizer step."""

    micro_steps_per_step: int

    def next_batch(self) -> Batch: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainingTask:
    """What to train. Pretraining and each fine-tuning objective build one of these."""

    model: nn.Module
    model_config: ModelConfig
    loss_fn: LossFn
    train_loader: BatchSource
    tokens_per_sample: int
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None  # called on every rank
    # (model, full state dict) -> the weights to save, e.g. with LoRA adapters merged
    export_state: Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    tokenizer_dir: Path | None = None
    extra_state: dict[str, Any] = field(default_factory=dict)  # saved in trainer_state.json (not "head")
    extra_files: dict[str, str] = field(default_factory=dict)  # written into each checkpoint (chat template)
    # (full state dict) -> {file name: tensors} saved beside the weights, e.g. LoRA adapters before merging
    extra_weights: Callable[[dict[str, torch.Tensor]], dict[str, dict[str, torch.Tensor]]] | None = None
    head: dict[str, Any] | None = None  # head.json of a model with a task head (classification)
