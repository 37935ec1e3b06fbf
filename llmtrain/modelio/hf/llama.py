"""Llama 2 / 3 / 3.1 / 3.2 and SmolLM / SmolLM2 (Llama with tied embeddings): ``LlamaForCausalLM``.

Also the family our own pretrained models export as. ``rope_scaling`` of type ``llama3`` (3.1, 3.2)
and ``linear`` is represented; Llama's ``attention_bias`` is not (it adds an ``o_proj`` bias too).
"""

from __future__ import annotations

from typing import Any

import torch

from llmtrain.model.config import ModelConfig
from llmtrain.modelio.hf.common import build_config, check_common, core_config, core_fields, refuse

MODEL_TYPE, ARCHITECTURE = "llama", "LlamaForCausalLM"


def config_from_hf(hf: dict[str, Any], name: str) -> ModelConfig:
    check_common(hf)
    if hf.get("attention_bias"):
        refuse("attention_bias", hf["attention_bias"], "Llama's attention bias includes o_proj, which llmtrain "
                                                      "models do not have (only q/k/v biases, as in Qwen2)")
    return build_config(core_fields(hf, name))


def unfit(cfg: ModelConfig) -> list[str]:
    """Why ``LlamaForCausalLM`` cannot compute ``cfg``'s function (empty when it can)."""
    problems = []
    if cfg.qkv_bias:
        problems.append("qkv_bias: Llama's attention_bias would also add an o_proj bias")
    if cfg.qk_norm:
        problems.append("qk_norm: Llama has no q/k norms")
    if cfg.sliding_window is not None:
        problems.append("sliding_window: Llama attends to the whole context")
    return problems


def config_to_hf(cfg: ModelConfig, dtype: torch.dtype | None, source: dict[str, Any] | None) -> dict[str, Any]:
    return {**core_config(cfg, dtype, ARCHITECTURE, MODEL_TYPE), "attention_bias": False, "mlp_bias": False,
            "pretraining_tp": 1}
