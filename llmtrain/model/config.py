"""The model's architecture: every field changes the function the weights compute (or their shapes).

Run-time switches that do not (attention backend, activation checkpointing, compile) live in
:class:`llmtrain.model.runtime.ModelRuntime` and are applied to a built model from outside, so a
checkpoint's ``model.yaml`` holds exactly this dataclass and two configs compare field by field.
:class:`LoraConfig` lives here too, so that run configs can embed it without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from llmtrain.config.base import field


@dataclass
class ModelConfig:
    """Llama-family decoder architecture (``name`` is a label, not architecture)."""

    name: str = field("custom", help="preset or model name, recorded in checkpoints and exports")
    vocab_size: int = field(32000, help="embedding rows; must be >= the tokenizer's vocabulary", min=1)
    dim: int = field(512, help="hidden size (d_model)", min=1)
    n_layers: int = field(8, help="number of transformer blocks", min=1)
    n_heads: int = field(8, help="query heads; must divide dim", min=1)
    n_kv_heads: int | None = field(None, help="key/value heads for GQA (null = n_heads); must divide n_heads")
    ffn_hidden_dim: int | None = field(None, help="SwiGLU inner width (null = Llama rule from dim, multiple_of)")
    multiple_of: int = field(256, help="round the derived SwiGLU width up to a multiple of this", min=1)
    ffn_dim_multiplier: float | None = field(None, help="scale on the derived SwiGLU width (Llama-3 uses 1.3)")
    max_seq_len: int = field(2048, help="longest sequence the model accepts (RoPE table length)", min=1)
    rope_theta: float = field(10000.0, help="RoPE base frequency", gt=0)
    norm_eps: float = field(1e-5, help="RMSNorm epsilon", gt=0)
    tie_embeddings: bool = field(False, help="share the token embedding and the output projection")
    init_std: float = field(0.02, help="std of the normal init; output projections are scaled by 1/sqrt(2*n_layers)", gt=0)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        """SwiGLU inner width: explicit, or Llama's 2/3·4·dim rounded up to ``multiple_of``."""
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def check(self) -> list[str]:
        out = []
        if self.dim % self.n_heads:
            out.append(f"n_heads: {self.n_heads} does not divide dim {self.dim}; pick n_heads so that dim/n_heads is an integer (e.g. {self.dim // 64 or 1} heads of 64)")
        elif self.head_dim % 2:
            out.append(f"n_heads: head dim {self.head_dim} (dim/n_heads) must be even for RoPE")
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            out.append(f"n_kv_heads: {self.n_kv_heads} must be >= 1 and divide n_heads {self.n_heads}")
        return out

    def architecture_dict(self) -> dict[str, Any]:
        """The architecture fields only (also on subclasses that add run-time fields), for model.yaml."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)}

    def architecture_diff(self, other: ModelConfig, labels: tuple[str, str] = ("checkpoint", "config")) -> list[str]:
        """``model.<field>: <labels[0]> a vs <labels[1]> b`` for each architecture field that differs.

        ``name`` is ignored: renaming a model does not change what its weights compute. The default
        labels fit the resume check (``self`` read from a checkpoint, ``other`` from the run config).
        """
        mine, theirs = self.architecture_dict(), other.architecture_dict()
        return [f"model.{k}: {labels[0]} {v!r} vs {labels[1]} {theirs[k]!r}"
                for k, v in mine.items() if k != "name" and v != theirs[k]]


@dataclass
class LoraConfig:
    """Low-rank adapters (see llmtrain.model.lora); the rank and alpha also decide how they merge."""

    enabled: bool = field(False, help="train low-rank adapters instead of all weights")
    rank: int = field(8, help="adapter rank r", min=1)
    alpha: float = field(16.0, help="scaling numerator: updates are scaled by alpha/rank", gt=0)
    dropout: float = field(0.0, help="dropout on the adapter input", min=0)
    targets: list[str] = field(default_factory=lambda: ["wq", "wk", "wv", "wo"],
                               help="projection names to adapt: any of wq, wk, wv, wo, w1, w2, w3")
