"""Checks that need the world size, run once at start-up before any compute.

The batch arithmetic (global batch = micro batch x accumulation x data-parallel ranks) is stated
here once; the DeepSpeed config builder and the global-batch sampler derive the accumulation from
the same function, so the rule and its message exist in one place.
"""

from __future__ import annotations

from typing import Any

from llmtrain.config.base import ConfigError


def micro_steps_per_step(global_batch_size: int, micro_batch_size: int, dp_size: int) -> int:
    """Micro batches per rank per optimizer step (= gradient accumulation steps).

    Raises ConfigError naming the nearest valid global batches when ``micro x dp`` does not divide
    the global batch.
    """
    per_step = micro_batch_size * dp_size
    if global_batch_size % per_step:
        lo = max(per_step, global_batch_size // per_step * per_step)
        raise ConfigError([
            f"train.global_batch_size: {global_batch_size} is not divisible by micro_batch_size x data-parallel "
            f"ranks = {micro_batch_size} x {dp_size} = {per_step}; use train.global_batch_size={lo} or "
            f"{lo + per_step}, or change train.micro_batch_size / the number of processes"])
    return global_batch_size // per_step


def validate_for_world(cfg: Any, world_size: int) -> None:
    """Everything about a training run config that depends on the number of ranks."""
    t = cfg.train
    micro_steps_per_step(t.global_batch_size, t.micro_batch_size, world_size)
