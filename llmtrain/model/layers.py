"""The pieces of a Llama block: RMSNorm, grouped-query self-attention with RoPE, SwiGLU MLP.

Names follow Meta's Llama / torchtitan (``wq wk wv wo``, ``w1 w2 w3``) so that checkpoints convert
to Hugging Face by renaming only. No biases, except on wq/wk/wv when ``qkv_bias`` is set (Qwen2);
``qk_norm`` adds per-head RMSNorms ``q_norm``/``k_norm`` (Qwen3).
"""

from __future__ import annotations

import torch
from torch import nn

from llmtrain.model.attention import DocumentLayout, attention
from llmtrain.model.config import ModelConfig
from llmtrain.model.kv_cache import KVCache
from llmtrain.model.rope import apply_rotary


class RMSNorm(nn.Module):
    """x / rms(x) * weight, normalised in fp32 and cast back before the weight (as HF does)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); w1 = gate, w3 = up, w2 = down."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))


class Attention(nn.Module):
    """Multi-head / grouped-query self-attention; the kernel is picked per call (``backend``).

    With ``qk_norm`` each head of q and k is RMS-normalised (one weight of ``head_size`` shared by
    the heads) after the projection and before RoPE, as Qwen3 does. ``sliding_window`` is passed to
    the kernel on every call.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim, bias = cfg.dim, cfg.qkv_bias
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_size
        self.window = cfg.sliding_window
        self.wq = nn.Linear(dim, self.n_heads * self.head_dim, bias=bias)
        self.wk = nn.Linear(dim, self.n_kv_heads * self.head_dim, bias=bias)
        self.wv = nn.Linear(dim, self.n_kv_heads * self.head_dim, bias=bias)
        self.wo = nn.Linear(self.n_heads * self.head_dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, backend: str,
                layout: DocumentLayout | None = None, kv_cache: KVCache | None = None,
                layer_idx: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(layer_idx, k, v)
        out = attention(q, k, v, backend=backend, causal=True, layout=layout, window=self.window)
        return self.wo(out.reshape(B, T, self.n_heads * self.head_dim))
