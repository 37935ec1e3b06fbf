"""Per-command roots of the run config over the shared sections of :mod:`llmtrain.config.schema`.

Each command reads the root that holds exactly the sections it uses, so a key it would ignore is an
error instead of a silent no-op:

- ``llmtrain train``: :class:`PretrainRunConfig` (model, data, train, optim, checkpoint, logging, deepspeed)
- ``llmtrain finetune``: :class:`FinetuneRunConfig` (finetune and eval instead of data; of the model
  section only the run-time switches are used: the architecture is ``finetune.init``'s, and a recipe's
  architecture keys that differ from it are replaced, with a notice)
- ``llmtrain eval``: :class:`EvalRunConfig` (data, train, finetune, eval), read from the checkpoint's
  saved config or a recipe written for another command: sections of other commands are skipped.

What can only be checked once the world size is known (the batch arithmetic) is checked by
:func:`llmtrain.config.validate.validate_for_world`, once, at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeAlias

from llmtrain.config.base import field
from llmtrain.config.schema import (
    CheckpointConfig,
    EvalConfig,
    FinetuneConfig,
    LoggingConfig,
    ModelSection,
    OptimConfig,
    TrainConfig,
    TrainDataConfig,
)


def _fp16_on_cpu(train: TrainConfig) -> list[str]:
    if train.precision == "fp16" and train.device == "cpu":
        return ["train.precision: fp16 needs a GPU; use bf16 or fp32 on CPU"]
    return []


@dataclass
class PretrainRunConfig:
    """`llmtrain train`."""

    model: ModelSection = field(default_factory=ModelSection, help="the transformer and how it runs")
    data: TrainDataConfig = field(default_factory=TrainDataConfig, help="what to train on")
    train: TrainConfig = field(default_factory=TrainConfig, help="batching, precision, ZeRO")
    optim: OptimConfig = field(default_factory=OptimConfig, help="AdamW and the LR schedule")
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, help="saving and resuming")
    logging: LoggingConfig = field(default_factory=LoggingConfig, help="metrics and plots")
    deepspeed: dict[str, Any] = field(default_factory=dict, help="raw DeepSpeed keys merged over the generated config")

    def check(self) -> list[str]:
        out = _fp16_on_cpu(self.train)
        if self.train.epochs:
            out.append(f"train.epochs: {self.train.epochs} is for fine-tuning only; pretraining streams prepared "
                       f"shards without epochs, so set train.max_steps (and remove train.epochs)")
        if self.train.seq_len > self.model.max_seq_len:
            out.append(f"train.seq_len: {self.train.seq_len} is above model.max_seq_len {self.model.max_seq_len}; "
                       f"lower train.seq_len or raise model.max_seq_len")
        return out


@dataclass
class FinetuneRunConfig:
    """`llmtrain finetune`."""

    model: ModelSection = field(default_factory=ModelSection,
                                help="run-time switches; the architecture is finetune.init's (it replaces these keys)")
    train: TrainConfig = field(default_factory=TrainConfig, help="batching, precision, ZeRO")
    optim: OptimConfig = field(default_factory=OptimConfig, help="AdamW and the LR schedule")
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, help="saving and resuming")
    logging: LoggingConfig = field(default_factory=LoggingConfig, help="metrics and plots")
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig, help="fine-tuning objective and data")
    eval: EvalConfig = field(default_factory=EvalConfig, help="what `llmtrain eval` runs on the result")
    deepspeed: dict[str, Any] = field(default_factory=dict, help="raw DeepSpeed keys merged over the generated config")

    def check(self) -> list[str]:
        return _fp16_on_cpu(self.train)


@dataclass
class EvalRunConfig:
    """`llmtrain eval`: what to evaluate a checkpoint on."""

    data: TrainDataConfig = field(default_factory=TrainDataConfig, help="prepared shards for perplexity per source")
    train: TrainConfig = field(default_factory=TrainConfig, help="seq_len and micro_batch_size of evaluation batches")
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig, help="the task dataset (classification, SFT)")
    eval: EvalConfig = field(default_factory=EvalConfig, help="evaluations")


RunConfig: TypeAlias = PretrainRunConfig | FinetuneRunConfig  # what the training loop and the engine read
ROOTS = (PretrainRunConfig, FinetuneRunConfig, EvalRunConfig)
# written by earlier versions into every checkpoint's config.yaml; read nowhere
LEGACY_KEYS = ("tokenizer",)


def section_names(root: type) -> set[str]:
    return {f.name for f in fields(root)}


def keep_sections(data: dict[str, Any], root: type) -> dict[str, Any]:
    """``data`` without the sections that belong only to other commands (and legacy keys).

    For configs written for another command (a checkpoint's saved config, a fine-tuning recipe read
    by `llmtrain eval`); unknown keys stay, so a misspelt section is still reported.
    """
    others = set().union(*(section_names(r) for r in ROOTS)) | set(LEGACY_KEYS)
    mine = section_names(root)
    return {k: v for k, v in data.items() if k in mine or k not in others}
