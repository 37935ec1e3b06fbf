"""The decoder-only Llama-style Transformer.

token embedding -> n_layers x [x + attn(norm(x)); x + mlp(norm(x))] -> norm -> output projection.
RoPE (HF rotate_half layout, optionally scaled), RMSNorm, SwiGLU, grouped-query attention, optional
tied embeddings, q/k/v biases, per-head q/k norms, an explicit head width and sliding-window attention
(see ModelConfig). The model knows nothing about parallelism or precision policy: DeepSpeed/autocast wrap it.
Speed switches (attention backend, activation checkpointing, compile) are set from outside by
``llmtrain.model.runtime.apply_runtime``; a plain ``Transformer(cfg)`` runs with auto/none/off.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmtrain.model.attention import DocumentLayout, build_layout, resolve_backend
from llmtrain.model.config import ModelConfig
from llmtrain.model.kv_cache import KVCache
from llmtrain.model.layers import Attention, FeedForward, RMSNorm
from llmtrain.model.rope import RotaryEmbedding, positions_from_doc_ids


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.checkpointed = False  # recompute in backward; set by llmtrain.model.runtime.apply_runtime
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg.dim, cfg.hidden_dim)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backend: str,
                layout: DocumentLayout | None = None, kv_cache: KVCache | None = None,
                layer_idx: int = 0) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, backend=backend, layout=layout,
                               kv_cache=kv_cache, layer_idx=layer_idx)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    """Llama-architecture language model; see ``docs/model.md``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        problems = cfg.check()
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.rope = RotaryEmbedding(cfg.head_size, cfg.rope_theta, cfg.max_seq_len, cfg.rope_scaling)
        # run-time switches (see llmtrain.model.runtime.apply_runtime); the defaults need no set-up
        self.attention_backend = "auto"
        self.compile_blocks = False
        self._compiled = False
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """N(0, init_std) for matrices, std / sqrt(2 n_layers) for the residual outputs wo and w2
        (GPT-2's scaling keeps the residual stream's variance independent of depth), ones for norms,
        zeros for q/k/v biases. Parameters are visited in a fixed order, so the result depends only on
        the torch seed (and a model without the optional parameters draws exactly what it always did)."""
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * self.cfg.n_layers)
        nn.init.normal_(self.tok_embeddings.weight, mean=0.0, std=std)
        for layer in self.layers:
            a, f = layer.attention, layer.feed_forward
            for lin in (a.wq, a.wk, a.wv, f.w1, f.w3):
                nn.init.normal_(lin.weight, mean=0.0, std=std)
            for lin in (a.wo, f.w2):
                nn.init.normal_(lin.weight, mean=0.0, std=out_std)
            for lin in (a.wq, a.wk, a.wv):
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
            for norm in (a.q_norm, a.k_norm):
                if norm is not None:
                    norm.reset_parameters()
            layer.attention_norm.reset_parameters()
            layer.ffn_norm.reset_parameters()
        self.norm.reset_parameters()
        if not self.cfg.tie_embeddings:
            nn.init.normal_(self.output.weight, mean=0.0, std=std)

    def _compute_dtype(self) -> torch.dtype:
        device_type = self.tok_embeddings.weight.device.type
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return self.tok_embeddings.weight.dtype

    def forward(self, tokens: torch.Tensor, *, doc_ids: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, return_hidden: bool = False) -> torch.Tensor:
        """Logits [B, T, vocab] (or final-normed hidden states [B, T, dim] with ``return_hidden``).

        ``doc_ids`` [B, T]: document of each token in a packed row (non-decreasing); attention stays
        inside documents and positions restart at 0 at each document. ``kv_cache``: positions continue
        from ``kv_cache.length`` and the cache is advanced by T.
        """
        B, T = tokens.shape
        if self.compile_blocks and not self._compiled and tokens.is_cuda:
            for layer in self.layers:
                layer.compile()
            self._compiled = True
        backend = resolve_backend(self.attention_backend, tokens.device, self._compute_dtype())
        layout, window = None, self.cfg.sliding_window
        if doc_ids is not None:
            if kv_cache is not None:
                raise ValueError("doc_ids and kv_cache cannot be combined; decode one document per row")
            positions = positions_from_doc_ids(doc_ids)
            layout = build_layout(doc_ids, backend, head_dim=self.cfg.head_size, window=window)
            bound = T
        else:
            start = kv_cache.length if kv_cache is not None else 0
            positions = torch.arange(start, start + T, device=tokens.device).expand(B, T)
            bound = start + T
            if window is not None and kv_cache is None and window < T and backend != "flash_attn":
                # one window mask (or flex block mask) per forward instead of one per layer
                one_doc = torch.zeros(B, T, dtype=torch.long, device=tokens.device)
                layout = build_layout(one_doc, backend, head_dim=self.cfg.head_size, window=window)
        cos, sin = self.rope(positions, bound)

        h = self.tok_embeddings(tokens)
        recompute = self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            if recompute and layer.checkpointed:
                h = checkpoint(layer, h, cos, sin, backend, layout, use_reentrant=False)
            else:
                h = layer(h, cos, sin, backend, layout, kv_cache, i)
        if kv_cache is not None:
            kv_cache.advance(T)
        h = self.norm(h)
        return h if return_hidden else self.output(h)
