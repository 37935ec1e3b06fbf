"""Fine-tuning's run length and warmup, settled once the training split's size is known.

A fine-tune is naturally measured in passes over its dataset (``train.epochs``), which only the
objective's ``build_task`` can turn into optimizer steps: it is the first place that has read the
dataset. It writes the result into ``cfg.train.max_steps`` (and a clipped ``cfg.optim.warmup_steps``)
before the trainer is built, so the LR schedule, the loop's stop and each checkpoint's ``config.yaml``
all see the final numbers, and a resumed run recomputes the same ones from the same dataset.
"""

from __future__ import annotations

import dataclasses
import math

from llmtrain.config.base import ConfigError
from llmtrain.config.schema import FINETUNE_WARMUP_FRACTION, OptimConfig, TrainConfig
from llmtrain.distributed.logging import get_logger

log = get_logger(__name__)


def _default_max_steps() -> int:
    return next(f.default for f in dataclasses.fields(TrainConfig) if f.name == "max_steps")  # type: ignore[return-value]


def steps_for_epochs(epochs: float, examples: int, global_batch_size: int) -> int:
    """ceil(epochs x examples / global_batch_size), at least 1.

    Rounded to 9 decimals first so that float noise (0.1 x 30 = 3.0000000000000004) does not add a step.
    """
    return max(1, math.ceil(round(epochs * examples / global_batch_size, 9)))


def settle_max_steps(train: TrainConfig, examples: int) -> int:
    """``train.max_steps`` for a fine-tune of ``examples`` training rows; derives it from ``train.epochs``.

    Both set is refused unless max_steps is the default or already the derived value (a run's saved
    ``config.yaml`` records both, and may be used again as a recipe).
    """
    if not train.epochs:
        return train.max_steps
    steps = steps_for_epochs(train.epochs, examples, train.global_batch_size)
    if train.max_steps not in (_default_max_steps(), steps):
        raise ConfigError([f"train.epochs and train.max_steps: both set ({train.epochs} epochs = {steps} steps of "
                           f"{train.global_batch_size} over {examples} training examples, and max_steps "
                           f"{train.max_steps}); set only one: train.epochs=0 to use max_steps, or remove max_steps from the "
                           f"recipe (or set it to its default {_default_max_steps()})"])
    log.info(f"[llmtrain] train.epochs {train.epochs:g} over {examples} training examples at global batch "
             f"{train.global_batch_size}: train.max_steps = {steps}")
    train.max_steps = steps
    return steps


def clip_warmup(optim: OptimConfig, max_steps: int) -> int:
    """``optim.warmup_steps`` capped at FINETUNE_WARMUP_FRACTION of the run, with a notice when it is cut."""
    limit = int(FINETUNE_WARMUP_FRACTION * max_steps)
    if optim.warmup_steps > limit:
        log.info(f"[llmtrain] optim.warmup_steps {optim.warmup_steps} is over {FINETUNE_WARMUP_FRACTION:.0%} of this "
                 f"fine-tune's {max_steps} steps: clipped to {limit}")
        optim.warmup_steps = limit
    return optim.warmup_steps
