"""Preallocated key/value cache for incremental decoding.

Keys are stored after RoPE, so a decoding step only rotates its new token. The model writes every
layer's new keys at positions ``length .. length+T-1`` and then calls :meth:`KVCache.advance`.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of all layers, [n_layers, B, max_len, n_kv_heads, head_dim] each."""

    def __init__(self, batch_size: int, max_len: int, n_layers: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        shape = (n_layers, batch_size, max_len, n_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.batch_size, self.max_len = batch_size, max_len
        self.length = 0

    @classmethod
    def for_model(cls, cfg, batch_size: int, max_len: int | None = None,
                  dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> KVCache:
        """A cache shaped for ``cfg`` (a ModelConfig); ``max_len`` defaults to ``cfg.max_seq_len``."""
        return cls(batch_size, max_len or cfg.max_seq_len, cfg.n_layers, cfg.kv_heads, cfg.head_size, dtype, device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``/``v`` [B, T, Hkv, D] after the cached ones; return all keys/values so far."""
        batch, new = k.shape[:2]
        end = self.length + new
        if batch != self.batch_size:
            raise ValueError(f"KV cache was made for batch size {self.batch_size}, got {batch}")
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} needed. Make a larger cache")
        self.k[layer, :, self.length:end] = k
        self.v[layer, :, self.length:end] = v
        return self.k[layer, :, :end], self.v[layer, :, :end]

    def advance(self, n: int) -> None:
        """Mark ``n`` more positions as filled (called once per forward, after all layers)."""
        self.length += n

    def reset(self) -> None:
        self.length = 0
