"""The Llama family (Llama 2/3, Mistral without sliding window): config map and weight-name map.

Our weights use Meta/torchtitan names and HF's rotate_half RoPE layout, so conversion is a pure
rename (no permutation of ``wq``/``wk``). Import refuses every config feature our model cannot
represent (biases, rope scaling, sliding windows, other activations, ...) instead of silently
loading something that computes a different function.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from llmtrain.config.base import ConfigError, build
from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.modelio.weights import tie_output, untie_output

# ours -> HF, per layer (after "layers.{i}." / "model.layers.{i}.")
_LAYER_NAMES = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
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
            raise CheckpointError(f"weight {name!r} has no Hugging Face Llama counterpart; "
                                  "export expects a plain llmtrain Transformer state dict (merge LoRA adapters first)")
    return out


def from_hf_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename HF keys (``LlamaForCausalLM`` or bare ``LlamaModel``) to ours and check shapes.

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
                                  "(biases or extra modules are not supported); this checkpoint cannot be imported")
    # some tied checkpoints store a copy of lm_head; the embedding is authoritative
    out = tie_output(untie_output(out, cfg), cfg)
    _check_shapes(out, cfg)
    return out


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    d, hd, q, kv = cfg.dim, cfg.hidden_dim, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (cfg.vocab_size, d), "norm.weight": (d,),
                                          "output.weight": (cfg.vocab_size, d)}
    per_layer = {"attention.wq.weight": (q, d), "attention.wk.weight": (kv, d), "attention.wv.weight": (kv, d),
                 "attention.wo.weight": (d, q), "feed_forward.w1.weight": (hd, d),
                 "feed_forward.w2.weight": (d, hd), "feed_forward.w3.weight": (hd, d),
                 "attention_norm.weight": (d,), "ffn_norm.weight": (d,)}
    for i in range(cfg.n_layers):
        shapes.update({f"layers.{i}.{k}": v for k, v in per_layer.items()})
    return shapes


def _check_shapes(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> None:
    want = expected_shapes(cfg)
    missing = sorted(set(want) - set(sd), key=_natural)
    if missing:
        raise CheckpointError(f"checkpoint lacks {len(missing)} weight(s) the config needs, e.g. {missing[:3]}; "
                              "the weight files are incomplete or belong to another config")
    for name, shape in want.items():
        if tuple(sd[name].shape) != shape:
            raise CheckpointError(f"weight {name!r} has shape {tuple(sd[name].shape)}, config implies {shape}; "
                                  "config.json and the weight files disagree")


def _natural(s: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


# ---------------------------------------------------------------------------- config.json <-> ModelConfig

def hf_config(cfg: ModelConfig, dtype: torch.dtype | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``config.json`` of a LlamaForCausalLM with ``cfg``'s architecture (readable by transformers 4.x and 5.x)."""
    dtype_name = str(dtype or torch.float32).removeprefix("torch.")
    out: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim, "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings, "attention_bias": False, "mlp_bias": False,
        "attention_dropout": 0.0, "initializer_range": cfg.init_std, "pretraining_tp": 1,
        "use_cache": True, "torch_dtype": dtype_name, "dtype": dtype_name,
    }
    out.update(extra or {})
    return out


def _refuse(field: str, value: Any, why: str) -> None:
    raise CheckpointError(f"cannot import this Hugging Face model: config.json {field}={value!r}: {why}. "
                          "llmtrain models are plain Llama (RoPE without scaling, RMSNorm, SwiGLU, no biases); "
                          "pick a checkpoint of that architecture")


def _rope_theta(hf: dict[str, Any]) -> float:
    if hf.get("rope_scaling"):
        _refuse("rope_scaling", hf["rope_scaling"], "scaled RoPE (linear/dynamic/yarn/llama3) is not implemented")
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params:  # per-layer-type nesting of transformers 5.x
        params = params["full_attention"] or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        _refuse("rope_parameters.rope_type", rope_type, "scaled RoPE is not implemented, only 'default'")
    prf = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if prf not in (None, 1, 1.0):
        _refuse("partial_rotary_factor", prf, "RoPE on part of each head is not implemented")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def model_config_from_hf(hf: dict[str, Any], name: str = "hf") -> ModelConfig:
    """Translate ``config.json``; raise CheckpointError naming the first unsupported field."""
    model_type = hf.get("model_type")
    if model_type not in ("llama", "mistral"):
        _refuse("model_type", model_type, "only llama and mistral (without sliding window) are supported")
    if model_type == "mistral" and hf.get("sliding_window") is not None:
        _refuse("sliding_window", hf["sliding_window"], "sliding-window attention is not implemented; "
                "set it to null only if max_position_embeddings <= the window")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            _refuse(flag, hf[flag], "the model has no bias terms")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        _refuse("hidden_act", act, "the MLP is SwiGLU (silu gate)")
    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, hidden // heads):
        _refuse("head_dim", hf["head_dim"], f"head_dim must equal hidden_size/num_attention_heads = {hidden // heads}")
    theta = _rope_theta(hf)
    data = {
        "name": name, "vocab_size": hf["vocab_size"], "dim": hidden, "n_layers": hf["num_hidden_layers"],
        "n_heads": heads, "n_kv_heads": hf.get("num_key_value_heads") or heads,
        "ffn_hidden_dim": hf["intermediate_size"], "max_seq_len": hf.get("max_position_embeddings", 2048),
        "rope_theta": theta, "norm_eps": hf.get("rms_norm_eps", 1e-6),
        "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "init_std": hf.get("initializer_range", 0.02),
    }
    try:
        return build(ModelConfig, data, prefix="model")
    except ConfigError as e:
        raise CheckpointError(f"config.json does not describe a valid llmtrain model: {e}") from None
