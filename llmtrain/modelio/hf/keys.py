"""Tensor names: ours <-> the native families' (Llama, Mistral, Qwen2 and Qwen3 share one layout).

Our weights use Meta/torchtitan names and HF's rotate_half RoPE layout, so conversion is a pure
rename (no permutation of ``wq``/``wk``). Which optional tensors exist (q/k/v biases, q/k norms)
follows the architecture: a name the config does not call for is refused rather than dropped.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.modelio.weights import tie_output, untie_output

# ours -> HF, per layer (after "layers.{i}." / "model.layers.{i}.")
_LAYER_NAMES = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "attention.wq.bias": "self_attn.q_proj.bias",
    "attention.wk.bias": "self_attn.k_proj.bias",
    "attention.wv.bias": "self_attn.v_proj.bias",
    "attention.q_norm.weight": "self_attn.q_norm.weight",
    "attention.k_norm.weight": "self_attn.k_norm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_TOP_NAMES = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}
_HF_LAYER = {v: k for k, v in _LAYER_NAMES.items()}
_HF_TOP = {v: k for k, v in _TOP_NAMES.items()}
# HF files may carry these non-weights (older Llama checkpoints saved the RoPE buffer).
_IGNORED_HF = re.compile(r".*rotary_emb\.inv_freq$")


def to_hf_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename our keys to HF's; with tied embeddings ``lm_head.weight`` is left out (HF re-ties it)."""
    out = {}
    for name, t in untie_output(sd, cfg).items():
        m = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
        if m and m.group(2) in _LAYER_NAMES:
            out[f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"] = t
        elif name in _TOP_NAMES:
            out[_TOP_NAMES[name]] = t
        else:
            raise CheckpointError(f"weight {name!r} has no Hugging Face counterpart; export expects a plain "
                                  "llmtrain Transformer state dict (merge LoRA adapters first)")
    return out


def from_hf_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename HF keys (``*ForCausalLM`` or the bare ``*Model``) to ours and check names and shapes.

    With tied embeddings ``output.weight`` is the embedding tensor itself.
    """
    out: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        if _IGNORED_HF.fullmatch(name):
            continue
        key = name if name.startswith(("model.", "lm_head.")) else f"model.{name}"
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", key)
        if m and m.group(2) in _HF_LAYER:
            out[f"layers.{m.group(1)}.{_HF_LAYER[m.group(2)]}"] = t
        elif key in _HF_TOP:
            out[_HF_TOP[key]] = t
        else:
            raise CheckpointError(f"Hugging Face weight {name!r} has no counterpart in the llmtrain model "
                                  "(o_proj/MLP biases or extra modules are not supported); this checkpoint "
                                  "cannot be imported")
    # some tied checkpoints store a copy of lm_head; the embedding is authoritative
    out = tie_output(untie_output(out, cfg), cfg)
    _check_names_and_shapes(out, cfg)
    return out


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of ``Transformer(cfg)`` with its shape (the tied output projection included)."""
    d, hd, q, kv = cfg.dim, cfg.hidden_dim, cfg.n_heads * cfg.head_size, cfg.kv_heads * cfg.head_size
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (cfg.vocab_size, d), "norm.weight": (d,),
                                          "output.weight": (cfg.vocab_size, d)}
    per_layer = {"attention.wq.weight": (q, d), "attention.wk.weight": (kv, d), "attention.wv.weight": (kv, d),
                 "attention.wo.weight": (d, q), "feed_forward.w1.weight": (hd, d),
                 "feed_forward.w2.weight": (d, hd), "feed_forward.w3.weight": (hd, d),
                 "attention_norm.weight": (d,), "ffn_norm.weight": (d,)}
    if cfg.qkv_bias:
        per_layer.update({"attention.wq.bias": (q,), "attention.wk.bias": (kv,), "attention.wv.bias": (kv,)})
    if cfg.qk_norm:
        per_layer.update({"attention.q_norm.weight": (cfg.head_size,), "attention.k_norm.weight": (cfg.head_size,)})
    for i in range(cfg.n_layers):
        shapes.update({f"layers.{i}.{k}": v for k, v in per_layer.items()})
    return shapes


def _check_names_and_shapes(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> None:
    want = expected_shapes(cfg)
    missing = sorted(set(want) - set(sd), key=_natural)
    if missing:
        raise CheckpointError(f"checkpoint lacks {len(missing)} weight(s) the config needs, e.g. {missing[:3]}; "
                              "the weight files are incomplete or belong to another config")
    extra = sorted(set(sd) - set(want), key=_natural)
    if extra:
        ours_to_hf = {f"layers.{i}.{k}": f"model.layers.{i}.{v}" for i in range(cfg.n_layers) for k, v in _LAYER_NAMES.items()}
        names = [ours_to_hf.get(k, k) for k in extra[:3]]
        raise CheckpointError(f"Hugging Face weight(s) {names} have no counterpart in the llmtrain model that "
                              f"config.json describes ({len(extra)} in all); config.json and the weight files "
                              "belong to different architectures")
    for name, shape in want.items():
        if tuple(sd[name].shape) != shape:
            raise CheckpointError(f"weight {name!r} has shape {tuple(sd[name].shape)}, config implies {shape}; "
                                  "config.json and the weight files disagree")


def _natural(s: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]
