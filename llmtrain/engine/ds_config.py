"""Generate the DeepSpeed JSON from a run config.

Global batch = micro batch x gradient accumulation x data-parallel size; the user types the
global and micro sizes once, the accumulation is derived here, and a batch that does not divide
is refused with the numbers. A ``deepspeed:`` section in the run config is merged over the
generated keys (recursively), so any DeepSpeed option stays reachable.
"""

from __future__ import annotations

import copy
from typing import Any

from llmtrain.config.base import ConfigError
from llmtrain.config.roots import RunConfig
from llmtrain.config.validate import micro_steps_per_step


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def build_ds_config(cfg: RunConfig, dp_size: int, *, on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config for ``cfg`` on ``dp_size`` data-parallel ranks."""
    t = cfg.train
    gas = micro_steps_per_step(t.global_batch_size, t.micro_batch_size, dp_size)
    zero: dict[str, Any] = {"stage": t.zero_stage}
    if t.zero_stage >= 1:
        zero.update({"contiguous_gradients": True, "overlap_comm": on_gpu,
                     "reduce_bucket_size": 5e7, "allgather_bucket_size": 5e7})
    if t.zero_stage == 3:
        zero.update({"stage3_gather_16bit_weights_on_model_save": True,
                     "stage3_param_persistence_threshold": 1e4})
    if t.zero_hpz_partition_size > 1:
        if dp_size % t.zero_hpz_partition_size:
            raise ConfigError([f"train.zero_hpz_partition_size: {t.zero_hpz_partition_size} does not divide the "
                               f"{dp_size} ranks of this run; use the GPUs per node (a divisor of {dp_size}) or 1"])
        zero["zero_hpz_partition_size"] = t.zero_hpz_partition_size
    if t.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if t.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    ds: dict[str, Any] = {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": gas,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": t.precision == "bf16"},
        "fp16": {"enabled": t.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16,
                 "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1},
        # our own AdamW (skips non-finite steps) also serves offloaded ZeRO
        "zero_force_ds_cpu_optimizer": False,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "checkpoint": {"load_universal": False},
    }
    return _merge(ds, cfg.deepspeed)
