"""Mistral: Llama plus sliding-window attention in every layer, ``MistralForCausalLM``.

transformers' Mistral applies ``sliding_window`` (null = full attention) to all layers and ignores
``layer_types``; so does this map. An explicit ``head_dim`` (Mistral Nemo) is represented.
"""

from __future__ import annotations

from typing import Any

import torch

from llmtrain.model.config import ModelConfig
from llmtrain.modelio.hf.common import build_config, check_common, core_config, core_fields, refuse

MODEL_TYPE, ARCHITECTURE = "mistral", "MistralForCausalLM"


def config_from_hf(hf: dict[str, Any], name: str) -> ModelConfig:
    check_common(hf)
    window = hf.get("sliding_window")
    if window is not None and (not isinstance(window, int) or window < 1):
        refuse("sliding_window", window, "a sliding window is a positive number of tokens (or null)")
    return build_config({**core_fields(hf, name), "sliding_window": window})


def unfit(cfg: ModelConfig) -> list[str]:
    """Why ``MistralForCausalLM`` cannot compute ``cfg``'s function (empty when it can)."""
    problems = []
    if cfg.qkv_bias:
        problems.append("qkv_bias: Mistral has no attention biases")
    if cfg.qk_norm:
        problems.append("qk_norm: Mistral has no q/k norms")
    return problems


def config_to_hf(cfg: ModelConfig, dtype: torch.dtype | None, source: dict[str, Any] | None) -> dict[str, Any]:
    return {**core_config(cfg, dtype, ARCHITECTURE, MODEL_TYPE), "sliding_window": cfg.sliding_window}
