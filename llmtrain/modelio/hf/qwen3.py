"""Qwen3 (dense): per-head RMSNorm on queries and keys and an explicit ``head_dim``, ``Qwen3ForCausalLM``.

``attention_bias`` of Qwen3 adds biases to q/k/v and o_proj; only ``false`` (every released model)
is represented. Sliding windows follow the Qwen2 rules.
"""

from __future__ import annotations

from typing import Any

import torch

from llmtrain.model.config import ModelConfig
from llmtrain.modelio.hf.common import (
    build_config,
    check_common,
    core_config,
    core_fields,
    qwen_window,
    qwen_window_config,
    refuse,
)

MODEL_TYPE, ARCHITECTURE = "qwen3", "Qwen3ForCausalLM"


def config_from_hf(hf: dict[str, Any], name: str) -> ModelConfig:
    check_common(hf)
    if hf.get("attention_bias"):
        refuse("attention_bias", hf["attention_bias"], "Qwen3's attention bias includes o_proj, which llmtrain "
                                                      "models do not have")
    # Qwen3Config's own default head_dim is 128, not hidden_size / num_attention_heads
    hf = {**hf, "head_dim": hf.get("head_dim", 128)}
    return build_config({**core_fields(hf, name), "qk_norm": True, "sliding_window": qwen_window(hf)})


def unfit(cfg: ModelConfig) -> list[str]:
    """Why ``Qwen3ForCausalLM`` cannot compute ``cfg``'s function (empty when it can)."""
    problems = []
    if not cfg.qk_norm:
        problems.append("qk_norm: Qwen3 always normalises q and k")
    if cfg.qkv_bias:
        problems.append("qkv_bias: Qwen3's attention_bias would also add an o_proj bias")
    return problems


def config_to_hf(cfg: ModelConfig, dtype: torch.dtype | None, source: dict[str, Any] | None) -> dict[str, Any]:
    return {**core_config(cfg, dtype, ARCHITECTURE, MODEL_TYPE), "attention_bias": False,
            **qwen_window_config(cfg, source)}
