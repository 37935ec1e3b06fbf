"""Qwen2 / Qwen2.5: Llama plus biases on the q/k/v projections, ``Qwen2ForCausalLM``.

The biases are fixed by the architecture (no config field). ``use_sliding_window`` is honoured
only when it gives every layer the same window (see :func:`~llmtrain.modelio.hf.common.qwen_window`).
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
)

MODEL_TYPE, ARCHITECTURE = "qwen2", "Qwen2ForCausalLM"


def config_from_hf(hf: dict[str, Any], name: str) -> ModelConfig:
    check_common(hf)
    return build_config({**core_fields(hf, name), "qkv_bias": True, "sliding_window": qwen_window(hf)})


def unfit(cfg: ModelConfig) -> list[str]:
    """Why ``Qwen2ForCausalLM`` cannot compute ``cfg``'s function (empty when it can)."""
    problems = []
    if not cfg.qkv_bias:
        problems.append("qkv_bias: Qwen2 always has q/k/v biases")
    if cfg.qk_norm:
        problems.append("qk_norm: Qwen2 has no q/k norms (Qwen3 does)")
    return problems


def config_to_hf(cfg: ModelConfig, dtype: torch.dtype | None, source: dict[str, Any] | None) -> dict[str, Any]:
    return {**core_config(cfg, dtype, ARCHITECTURE, MODEL_TYPE), **qwen_window_config(cfg, source)}
