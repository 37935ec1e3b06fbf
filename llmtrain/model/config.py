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

ROPE_SCALING_TYPES = ("linear", "llama3")


@dataclass
class RopeScaling:
    """Stretch RoPE's wavelengths for contexts longer than pretraining (see llmtrain.model.rope).

    ``linear`` divides every frequency by ``factor`` (position interpolation); ``llama3`` (Llama 3.1)
    divides only the low frequencies (wavelength > original_max_position_embeddings / low_freq_factor),
    keeps the high ones and interpolates smoothly in between.
    """

    type: str = field("llama3", help="linear or llama3", choices=ROPE_SCALING_TYPES)
    factor: float = field(8.0, help="how much longer the context becomes (frequencies are divided by this)", gt=0)
    low_freq_factor: float = field(1.0, help="llama3: wavelengths above original/low_freq_factor are fully scaled", gt=0)
    high_freq_factor: float = field(4.0, help="llama3: wavelengths below original/high_freq_factor are kept", gt=0)
    original_max_position_embeddings: int = field(8192, help="llama3: the context length of pretraining", min=1)

    def check(self) -> list[str]:
        if self.type == "llama3" and self.high_freq_factor <= self.low_freq_factor:
            return [f"rope_scaling.high_freq_factor: {self.high_freq_factor} must exceed low_freq_factor "
                    f"{self.low_freq_factor} (Llama 3.1 uses 4 and 1)"]
        return []


@dataclass
class ModelConfig:
    """Llama-family decoder architecture (``name`` is a label, not architecture).

    The defaults are plain Llama; ``qkv_bias`` (Qwen2), ``qk_norm`` and ``head_dim`` (Qwen3),
    ``sliding_window`` (Mistral) and ``rope_scaling`` (Llama 3.1) are options any preset may use.
    """

    name: str = field("custom", help="preset or model name, recorded in checkpoints and exports")
    vocab_size: int = field(32000, help="embedding rows; must be >= the tokenizer's vocabulary", min=1,
                            max=1 << 22)
    dim: int = field(512, help="hidden size (d_model)", min=1)
    n_layers: int = field(8, help="number of transformer blocks", min=1)
    n_heads: int = field(8, help="query heads; must divide dim", min=1)
    n_kv_heads: int | None = field(None, help="key/value heads for GQA (null = n_heads); must divide n_heads")
    head_dim: int | None = field(None, help="width of each attention head (null = dim/n_heads); even, for RoPE", min=2)
    ffn_hidden_dim: int | None = field(None, help="SwiGLU inner width (null = Llama rule from dim, multiple_of)")
    multiple_of: int = field(256, help="round the derived SwiGLU width up to a multiple of this", min=1)
    ffn_dim_multiplier: float | None = field(None, help="scale on the derived SwiGLU width (Llama-3 uses 1.3)")
    max_seq_len: int = field(2048, help="longest sequence the model accepts (RoPE table length)", min=1)
    rope_theta: float = field(10000.0, help="RoPE base frequency", gt=0)
    norm_eps: float = field(1e-5, help="RMSNorm epsilon", gt=0)
    tie_embeddings: bool = field(False, help="share the token embedding and the output projection")
    qkv_bias: bool = field(False, help="biases on the query, key and value projections (Qwen2); never on the output one")
    qk_norm: bool = field(False, help="RMSNorm over each head of the queries and keys, before RoPE (Qwen3)")
    sliding_window: int | None = field(None, help="each token attends to itself and the previous sliding_window-1 "
                                                  "tokens (Mistral); null = the whole causal context", min=1)
    rope_scaling: RopeScaling | None = field(None, help="RoPE frequency scaling for long contexts (null = none)")
    init_std: float = field(0.02, help="std of the normal init; output projections are scaled by 1/sqrt(2*n_layers)", gt=0)

    def __post_init__(self) -> None:
        if isinstance(self.rope_scaling, dict):  # ModelConfig(**architecture_dict()) passes plain data
            self.rope_scaling = RopeScaling(**self.rope_scaling)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_size(self) -> int:
        """The width of each head in use: ``head_dim``, or dim/n_heads when that is null."""
        return self.head_dim if self.head_dim is not None else self.dim // self.n_heads

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
        if self.head_dim is not None:
            if self.head_dim % 2:
                out.append(f"head_dim: {self.head_dim} must be even for RoPE")
        elif self.dim % self.n_heads:
            out.append(f"n_heads: {self.n_heads} does not divide dim {self.dim}; pick n_heads so that dim/n_heads is an integer (e.g. {self.dim // 64 or 1} heads of 64), or set head_dim")
        elif self.head_size % 2:
            out.append(f"n_heads: head dim {self.head_size} (dim/n_heads) must be even for RoPE; or set head_dim")
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            out.append(f"n_kv_heads: {self.n_kv_heads} must be >= 1 and divide n_heads {self.n_heads}")
        return out

    def architecture_dict(self) -> dict[str, Any]:
        """The architecture fields only (also on subclasses that add run-time fields), as plain data for model.yaml."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)}
        if out["rope_scaling"] is not None:
            out["rope_scaling"] = dataclasses.asdict(out["rope_scaling"])
        return out

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
