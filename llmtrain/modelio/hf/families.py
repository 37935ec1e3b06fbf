"""The native families (one module each) and the choice of family on import and export.

Import reads ``model_type``. Export writes the family the model came from: its ``config.json`` is
kept beside the weights as ``hf_config.json`` (:data:`~llmtrain.modelio.layout.HF_CONFIG_FILE`,
written by ``llmtrain import-hf`` and carried into fine-tuning checkpoints) and is re-written with
the architecture fields updated and every other field (token ids, decoding defaults, ...) kept.
A model without that file (our own pretraining) exports as the simplest family that computes its
function: Qwen3 with ``qk_norm``, Qwen2 with ``qkv_bias``, Mistral with a sliding window, else Llama.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.modelio.hf import llama, mistral, qwen2, qwen3
from llmtrain.modelio.hf.common import refuse
from llmtrain.modelio.layout import HF_CONFIG_FILE

FAMILIES: dict[str, ModuleType] = {m.MODEL_TYPE: m for m in (llama, mistral, qwen2, qwen3)}
HF_CONFIG_JSON = "config.json"


def model_config_from_hf(hf: dict[str, Any], name: str = "hf") -> ModelConfig:
    """Translate ``config.json``; raise CheckpointError naming the first field we cannot represent."""
    model_type = hf.get("model_type")
    family = FAMILIES.get(model_type)  # type: ignore[arg-type]
    if family is None:
        refuse("model_type", model_type, f"the native families are {', '.join(FAMILIES)} (`llmtrain finetune --init "
                                         f"DIR` trains any other causal LM as the transformers module itself)")
    return family.config_from_hf(hf, name)


def family_for(cfg: ModelConfig) -> ModuleType:
    """The family our own models (no source config) export as: the simplest one that fits."""
    if cfg.qk_norm:
        return qwen3
    if cfg.qkv_bias:
        return qwen2
    if cfg.sliding_window is not None:
        return mistral
    return llama


def hf_config(cfg: ModelConfig, dtype: torch.dtype | None, extra: dict[str, Any] | None = None, *,
              source: dict[str, Any] | None = None) -> dict[str, Any]:
    """``config.json`` for ``cfg``: the source family's (its other fields kept) or :func:`family_for`'s."""
    family = FAMILIES.get(source.get("model_type")) if source is not None else family_for(cfg)  # type: ignore[arg-type]
    if family is None:
        raise CheckpointError(f"the source config ({HF_CONFIG_FILE}) has model_type {source.get('model_type')!r}, "
                              f"not one of {', '.join(FAMILIES)}; remove {HF_CONFIG_FILE} to export by architecture")
    problems = family.unfit(cfg)
    if problems:
        where = f"the source config ({HF_CONFIG_FILE}) says {family.MODEL_TYPE}" if source is not None else "no family fits"
        raise CheckpointError(f"cannot export as {family.ARCHITECTURE}: " + "; ".join(problems) +
                              f" ({where}). The weights' architecture (model.yaml) and the family disagree")
    out = {**(source or {}), **family.config_to_hf(cfg, dtype, source)}
    out.update(extra or {})
    return out


def read_source_config(directory: str | Path) -> dict[str, Any] | None:
    """The Hugging Face config a model came from: ``hf_config.json`` beside llmtrain weights, or the
    ``config.json`` of a Hugging Face directory; None for our own models."""
    d = Path(directory)
    for name in (HF_CONFIG_FILE, HF_CONFIG_JSON):
        path = d / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise CheckpointError(f"{path} is unreadable ({e}); restore it from the Hugging Face model "
                                      f"directory the weights came from") from None
            if not isinstance(data, dict):
                raise CheckpointError(f"{path} must hold a JSON object (a transformers config), got {type(data).__name__}")
            return data
    return None


def source_config_files(source: dict[str, Any] | None) -> dict[str, str]:
    """``{HF_CONFIG_FILE: text}`` to write beside weights derived from ``source`` (empty without one)."""
    return {HF_CONFIG_FILE: json.dumps(source, indent=2) + "\n"} if source is not None else {}
