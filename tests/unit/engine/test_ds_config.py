"""The DeepSpeed JSON is derived from the run config; batch arithmetic that does not divide is refused."""

from __future__ import annotations

import pytest

from llmtrain.config import ConfigError, load_run_config
from llmtrain.config.validate import micro_steps_per_step
from llmtrain.engine.ds_config import build_ds_config


def test_accumulation_is_derived():
    assert micro_steps_per_step(32, 4, 2) == 4
    cfg = load_run_config(None, ["train.global_batch_size=48", "train.micro_batch_size=3", "train.zero_stage=3",
                                 "train.offload_optimizer=true", "train.precision=bf16"])
    ds = build_ds_config(cfg, 4, on_gpu=True)
    assert ds["train_batch_size"] == 48 and ds["train_micro_batch_size_per_gpu"] == 3
    assert ds["gradient_accumulation_steps"] == 4
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]


def test_indivisible_batch_names_numbers_and_fix():
    with pytest.raises(ConfigError) as e:
        micro_steps_per_step(30, 4, 2)
    assert "30 is not divisible by micro_batch_size x data-parallel ranks = 4 x 2 = 8" in str(e.value)
    assert "train.global_batch_size=24 or 32" in str(e.value)


def test_deepspeed_section_overrides_generated_keys():
    cfg = load_run_config(None, ["train.zero_stage=2", "deepspeed.zero_optimization.reduce_bucket_size=123",
                                 "deepspeed.wall_clock_breakdown=true"])
    ds = build_ds_config(cfg, 1, on_gpu=False)
    assert ds["zero_optimization"]["reduce_bucket_size"] == 123
    assert ds["zero_optimization"]["stage"] == 2  # untouched keys of the same section survive
    assert ds["wall_clock_breakdown"] is True
