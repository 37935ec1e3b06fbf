"""Tiny model configs shared by the model and model-I/O tests (fp32, CPU, milliseconds per forward)."""

from __future__ import annotations

import torch

from llmtrain.model.config import ModelConfig
from llmtrain.model.runtime import RUNTIME_KEYS, ModelRuntime, apply_runtime
from llmtrain.model.transformer import Transformer


def tiny_config(**over) -> ModelConfig:
    base = dict(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, max_seq_len=64)
    base.update(over)
    return ModelConfig(**base)


def tiny_model(seed: int = 0, **over) -> Transformer:
    """A tiny model whose norm weights are perturbed too, so that a mixed-up norm is visible.

    Keys of :class:`ModelRuntime` in ``over`` (attention_backend, ...) are applied with apply_runtime.
    """
    runtime = ModelRuntime(**{k: over.pop(k) for k in RUNTIME_KEYS if k in over})
    torch.manual_seed(seed)
    model = apply_runtime(Transformer(tiny_config(**over)), runtime)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()
