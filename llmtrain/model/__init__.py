"""The Llama-style decoder: Transformer, attention backends, KV cache, FLOPs, HF interop.

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
