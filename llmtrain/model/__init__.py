"""The Llama-style decoder: Transformer, attention backends, KV cache, FLOPs, heads, LoRA.

Architecture only: run-time switches are applied from outside (:mod:`llmtrain.model.runtime`);
weights on disk and Hugging Face names live in :mod:`llmtrain.modelio`.

Exports are resolved lazily so that ``llmtrain.model.flops`` stays importable without torch work.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KVCache", "Transformer"]


def __getattr__(name: str) -> Any:
    if name == "Transformer":
        from llmtrain.model.transformer import Transformer
        return Transformer
    if name == "KVCache":
        from llmtrain.model.kv_cache import KVCache
        return KVCache
    raise AttributeError(f"module 'llmtrain.model' has no attribute {name!r}")
