"""What the native families' ``config.json`` maps share: the Llama core fields, RoPE, sliding windows.

Every family module (llama, mistral, qwen2, qwen3) reads and writes its own config through these
helpers. Reading refuses, by field name, every value our Transformer cannot represent, instead of
loading weights into a model that would compute a different function. Written configs are readable
by transformers 4.x (``rope_theta``/``rope_scaling``) and 5.x (``rope_parameters``).
"""

from __future__ import annotations

from typing import Any, NoReturn

import torch

from llmtrain.config.base import ConfigError, build
from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig, RopeScaling

FULL, SLIDING = "full_attention", "sliding_attention"
_ROPE_KEYS = {"linear": ("factor",),
              "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}


def refuse(field: str, value: Any, why: str) -> NoReturn:
    raise CheckpointError(f"cannot import this Hugging Face model: config.json {field}={value!r}: {why}. "
                          "llmtrain's native families are Llama, Mistral, Qwen2 and Qwen3 as transformers "
                          "defines them; pick a checkpoint of that architecture")


def check_common(hf: dict[str, Any]) -> None:
    """Refuse what no native family represents: other activations, MLP biases, partial RoPE."""
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        refuse("hidden_act", act, "the MLP is SwiGLU (silu gate)")
    if hf.get("mlp_bias"):
        refuse("mlp_bias", hf["mlp_bias"], "the MLP has no bias terms")
    prf = hf.get("partial_rotary_factor", 1.0)
    if prf not in (None, 1, 1.0):
        refuse("partial_rotary_factor", prf, "RoPE rotates the whole head")


def rope_from_hf(hf: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from ``rope_scaling`` (transformers 4.x) or ``rope_parameters`` (5.x)."""
    params = hf.get("rope_parameters") or {}
    if FULL in params:  # per-layer-type nesting of transformers 5.x
        params = params[FULL] or {}
    field = "rope_parameters"
    if hf.get("rope_scaling"):
        params, field = {**params, **hf["rope_scaling"]}, "rope_scaling"
    prf = params.get("partial_rotary_factor", 1.0)
    if prf not in (None, 1, 1.0):
        refuse(f"{field}.partial_rotary_factor", prf, "RoPE rotates the whole head")
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type not in _ROPE_KEYS:
        refuse(f"{field}.rope_type", rope_type, "only default, linear and llama3 RoPE are implemented")
    values = {k: params.get(k) for k in _ROPE_KEYS[rope_type]}
    if rope_type == "llama3" and values["original_max_position_embeddings"] is None:
        values["original_max_position_embeddings"] = hf.get("max_position_embeddings")  # transformers' default
    missing = [k for k, v in values.items() if v is None]
    if missing:
        refuse(f"{field}", params, f"{rope_type} RoPE scaling needs {', '.join(missing)}")
    return theta, RopeScaling(type=rope_type, **values)


def rope_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """``rope_theta``, ``rope_scaling`` and ``rope_parameters`` entries describing ``cfg``'s RoPE."""
    scaling: dict[str, Any] | None = None
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        scaling = {"rope_type": s.type, **{k: getattr(s, k) for k in _ROPE_KEYS[s.type]}}
    params = {"rope_type": "default", **(scaling or {}), "rope_theta": cfg.rope_theta}
    return {"rope_theta": cfg.rope_theta, "rope_scaling": scaling, "rope_parameters": params}


def qwen_window(hf: dict[str, Any]) -> int | None:
    """The sliding window of a Qwen2/Qwen3 config, which must be the same for every layer.

    transformers ignores ``sliding_window`` unless ``use_sliding_window`` is true, and then applies it
    to the layers from ``max_window_layers`` on (or to those ``layer_types`` marks as sliding).
    Our layers share one attention pattern, so a mix of full and sliding layers is refused.
    """
    window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
    first_sliding = hf.get("max_window_layers", 28)
    kinds = hf.get("layer_types") or [SLIDING if window is not None and i >= first_sliding else FULL
                                      for i in range(hf["num_hidden_layers"])]
    unknown = set(kinds) - {FULL, SLIDING}
    if unknown:
        refuse("layer_types", sorted(unknown), f"only {FULL} and {SLIDING} layers exist")
    windows = {window if kind == SLIDING else None for kind in kinds}
    if len(windows) > 1:
        field = "layer_types" if hf.get("layer_types") else "max_window_layers"
        refuse(field, hf.get(field), f"with use_sliding_window it mixes sliding-window ({window}) and full-attention "
                                     "layers; every llmtrain layer uses the same attention pattern")
    found = windows.pop()
    if found is not None and (not isinstance(found, int) or found < 1):
        refuse("sliding_window", found, "a sliding window is a positive number of tokens")
    return found


def qwen_window_config(cfg: ModelConfig, source: dict[str, Any] | None) -> dict[str, Any]:
    """The Qwen2/Qwen3 fields that give every layer ``cfg.sliding_window`` (or none)."""
    n = cfg.n_layers
    if cfg.sliding_window is None:
        kept = source or {}
        return {"use_sliding_window": False, "sliding_window": kept.get("sliding_window"),
                "max_window_layers": kept.get("max_window_layers", n), "layer_types": [FULL] * n}
    return {"use_sliding_window": True, "sliding_window": cfg.sliding_window, "max_window_layers": 0,
            "layer_types": [SLIDING] * n}


def core_fields(hf: dict[str, Any], name: str) -> dict[str, Any]:
    """The ModelConfig fields every family reads the same way (no biases, norms or windows)."""
    theta, scaling = rope_from_hf(hf)
    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim")
    if head_dim == hidden // heads and hidden % heads == 0:
        head_dim = None  # the default width: keep model.yaml free of a redundant field
    return {
        "name": name, "vocab_size": hf["vocab_size"], "dim": hidden, "n_layers": hf["num_hidden_layers"],
        "n_heads": heads, "n_kv_heads": hf.get("num_key_value_heads") or heads,
        "head_dim": head_dim,
        "ffn_hidden_dim": hf["intermediate_size"], "max_seq_len": hf.get("max_position_embeddings", 2048),
        "rope_theta": theta, "rope_scaling": scaling, "norm_eps": hf.get("rms_norm_eps", 1e-6),
        "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "init_std": hf.get("initializer_range", 0.02),
    }


def build_config(data: dict[str, Any]) -> ModelConfig:
    """ModelConfig from translated fields; an invalid combination is a CheckpointError naming it."""
    if data.get("rope_scaling") is not None:
        data = {**data, "rope_scaling": vars(data["rope_scaling"])}
    try:
        return build(ModelConfig, data, prefix="model")
    except ConfigError as e:
        raise CheckpointError(f"config.json does not describe a valid llmtrain model: {e}") from None


def core_config(cfg: ModelConfig, dtype: torch.dtype | None, architecture: str, model_type: str) -> dict[str, Any]:
    """The config.json entries every family writes (the family adds its own fields)."""
    dtype_name = str(dtype or torch.float32).removeprefix("torch.")
    return {
        "architectures": [architecture], "model_type": model_type,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_size, "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps, **rope_to_hf(cfg),
        "tie_word_embeddings": cfg.tie_embeddings, "attention_dropout": 0.0, "initializer_range": cfg.init_std,
        "use_cache": True, "torch_dtype": dtype_name, "dtype": dtype_name,
    }


