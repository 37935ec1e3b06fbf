"""Analytic parameter counts and training FLOPs per token (for MFU), without building a model.

FLOPs follow the PaLM paper's convention (Chowdhery et al. 2022, appendix B):

    flops_per_token = 6 * N + 12 * L * H * Q * T

N counts the parameters that take part in matrix multiplies: every block weight plus the output
projection (vocab x dim, counted even when tied, since the logits matmul runs either way), but not the
input embedding (a lookup). 6 = 2 (multiply-add) x 3 (forward + backward of both inputs and weights).
The second term is attention's QK^T and AV over a context of T tokens, L layers, H heads of dim Q,
counted for the full T x T square as PaLM does (causal masking halves the useful work; the convention
keeps MFU comparable with published figures). With a sliding window W < T each query meets at most W
keys, so the context term uses min(T, W). Head widths come from ``cfg.head_size`` (``head_dim`` when set).
"""

from __future__ import annotations

from llmtrain.model.config import ModelConfig


def block_params(cfg: ModelConfig) -> int:
    """Parameters of one transformer block: attention (with q/k/v biases and q/k norms when enabled),
    SwiGLU MLP and the two norms."""
    q_out = cfg.n_heads * cfg.head_size
    kv_out = cfg.kv_heads * cfg.head_size
    attn = cfg.dim * q_out + 2 * cfg.dim * kv_out + q_out * cfg.dim
    if cfg.qkv_bias:
        attn += q_out + 2 * kv_out
    if cfg.qk_norm:
        attn += 2 * cfg.head_size
    mlp = 3 * cfg.dim * cfg.hidden_dim
    return attn + mlp + 2 * cfg.dim


def num_params(cfg: ModelConfig, include_embeddings: bool = True) -> int:
    """Number of parameters of ``Transformer(cfg)`` (shared tied weights counted once).

    ``include_embeddings=False`` leaves out the token embedding and the output projection (the
    vocab x dim matrices), i.e. Kaplan et al.'s "non-embedding" count.
    """
    body = cfg.n_layers * block_params(cfg) + cfg.dim  # + final norm
    if not include_embeddings:
        return body
    vocab = cfg.vocab_size * cfg.dim
    return body + vocab * (1 if cfg.tie_embeddings else 2)


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token at context ``seq_len``: 6N + 12 L H Q T."""
    matmul_params = num_params(cfg, include_embeddings=False) + cfg.vocab_size * cfg.dim
    context = min(seq_len, cfg.sliding_window) if cfg.sliding_window else seq_len
    attn = 12 * cfg.n_layers * cfg.n_heads * cfg.head_size * context
    return float(6 * matmul_params + attn)


def model_flops_utilization(tokens_per_second: float, cfg: ModelConfig, seq_len: int,
                            peak_flops_per_second: float) -> float:
    """MFU: achieved model FLOPs/s divided by the hardware peak (per device, same unit)."""
    return tokens_per_second * flops_per_token(cfg, seq_len) / peak_flops_per_second
