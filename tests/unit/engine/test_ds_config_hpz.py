"""ZeRO++ hierarchical partitioning: a train key that reaches the DeepSpeed JSON, refused where it cannot work."""

from __future__ import annotations

import pytest

from llmtrain.config import ConfigError, load_run_config
from llmtrain.engine.ds_config import build_ds_config


def test_hpz_reaches_the_deepspeed_config():
    cfg = load_run_config(None, ["train.zero_stage=3", "train.zero_hpz_partition_size=2", "train.global_batch_size=8",
                                 "train.micro_batch_size=2"])
    assert build_ds_config(cfg, 4, on_gpu=False)["zero_optimization"]["zero_hpz_partition_size"] == 2
    off = load_run_config(None, ["train.zero_stage=3", "train.global_batch_size=8", "train.micro_batch_size=2"])
    assert "zero_hpz_partition_size" not in build_ds_config(off, 4, on_gpu=False)["zero_optimization"]


def test_hpz_needs_zero3_and_a_divisor_of_the_world_size():
    with pytest.raises(ConfigError, match="zero_hpz_partition_size: 2 needs zero_stage 3"):
        load_run_config(None, ["train.zero_stage=2", "train.zero_hpz_partition_size=2"])
    cfg = load_run_config(None, ["train.zero_stage=3", "train.zero_hpz_partition_size=3", "train.global_batch_size=8",
                                 "train.micro_batch_size=2"])
    with pytest.raises(ConfigError, match="3 does not divide the 4 ranks of this run"):
        build_ds_config(cfg, 4, on_gpu=False)
