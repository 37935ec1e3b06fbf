"""Hugging Face ``LlamaForCausalLM`` directories: export to and import from local disk.

Our weights use Meta/torchtitan names and HF's rotate_half RoPE layout, so conversion is a pure
rename (no permutation of ``wq``/``wk``). Import refuses every config feature our model cannot
represent (biases, rope scaling, sliding windows, other activations, ...) instead of silently
loading something that computes a different function.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from llmtrain.config.base import ConfigError, build
from llmtrain.config.schema import ModelConfig
from llmtrain.errors import CheckpointError

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
_TOKENIZER_SKIP = {"config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json"}


def to_hf_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename our keys to HF's; with tied embeddings ``lm_head.weight`` is left out (HF re-ties it)."""
    out = {}
    for name, t in sd.items():
        m = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
        if m and m.group(2) in _LAYER_NAMES:
            out[f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"] = t
        elif name in _TOP_NAMES:
            if name == "output.weight" and cfg.tie_embeddings:
                continue
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
            if key == "lm_head.weight" and cfg.tie_embeddings:
                continue  # some tied checkpoints store a copy; the embedding is authoritative
            out[_HF_TOP[key]] = t
        else:
            raise CheckpointError(f"Hugging Face weight {name!r} has no counterpart in the llmtrain model "
                                  "(biases or extra modules are not supported); this checkpoint cannot be imported")
    if cfg.tie_embeddings and "tok_embeddings.weight" in out:
        out["output.weight"] = out["tok_embeddings.weight"]
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


# ---------------------------------------------------------------------------- weight files

def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)?\s*", size, re.IGNORECASE)
    if not m:
        raise ValueError(f"max_shard_size {size!r} is not a size like '2GB', '500MB' or a byte count")
    units = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
    return int(float(m.group(1)) * units.get((m.group(2) or "").lower(), 1))


def save_safetensors(sd: dict[str, torch.Tensor], out_dir: Path, max_shard_size: int | str = "2GB",
                     prefix: str = "model") -> list[Path]:
    """Write ``<prefix>.safetensors``, or numbered shards plus ``<prefix>.safetensors.index.json``."""
    from safetensors.torch import save_file

    limit = _parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for name, t in sd.items():
        size = t.numel() * t.element_size()
        if shards[-1] and used + size > limit:
            shards.append({})
            used = 0
        shards[-1][name] = t.detach().cpu().contiguous()
        used += size
    meta = {"format": "pt"}
    if len(shards) == 1:
        path = out_dir / f"{prefix}.safetensors"
        save_file(shards[0], str(path), metadata=meta)
        return [path]
    paths, weight_map = [], {}
    for i, shard in enumerate(shards, 1):
        path = out_dir / f"{prefix}-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path), metadata=meta)
        weight_map.update(dict.fromkeys(shard, path.name))
        paths.append(path)
    total = sum(t.numel() * t.element_size() for t in sd.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return paths


def load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF directory: safetensors (single or sharded) or ``pytorch_model.bin``."""
    from safetensors.torch import load_file

    for stem, loader in (("model.safetensors", load_file),
                         ("pytorch_model.bin", lambda p: torch.load(p, map_location="cpu", weights_only=True))):
        if (model_dir / stem).is_file():
            return dict(loader(str(model_dir / stem)))
        index = model_dir / f"{stem}.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            sd: dict[str, torch.Tensor] = {}
            for f in files:
                sd.update(loader(str(model_dir / f)))
            return sd
    raise CheckpointError(f"{model_dir} has no model.safetensors, sharded safetensors index or pytorch_model.bin; "
                          "point at a Hugging Face model directory saved with save_pretrained")


def copy_tokenizer(tokenizer_dir: str | Path, out_dir: Path) -> list[str]:
    """Copy the tokenizer's files (not weights or model configs) into ``out_dir``."""
    copied = []
    for f in sorted(Path(tokenizer_dir).iterdir()):
        if f.is_file() and f.name not in _TOKENIZER_SKIP and not f.name.endswith((".safetensors", ".bin")):
            shutil.copy2(f, out_dir / f.name)
            copied.append(f.name)
    return copied


def _special_ids(tokenizer_dir: str | Path | None) -> dict[str, int]:
    """bos/eos/pad ids read from a SentencePiece model in ``tokenizer_dir`` (empty when unknown)."""
    if tokenizer_dir is None or not (Path(tokenizer_dir) / "tokenizer.model").is_file():
        return {}
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(Path(tokenizer_dir) / "tokenizer.model"))
    ids = {"bos_token_id": sp.bos_id(), "eos_token_id": sp.eos_id(), "pad_token_id": sp.pad_id()}
    return {k: v for k, v in ids.items() if v >= 0}


def export_hf(state_dict: dict[str, torch.Tensor], cfg: ModelConfig, out_dir: str | Path, *,
              tokenizer_dir: str | Path | None = None, dtype: torch.dtype | None = torch.float32,
              max_shard_size: int | str = "2GB", extra_config: dict[str, Any] | None = None) -> Path:
    """Write a ``LlamaForCausalLM`` directory loadable with ``from_pretrained(out_dir)``.

    ``dtype=None`` keeps each tensor's dtype. Special-token ids come from ``extra_config`` or, when
    the tokenizer is a SentencePiece ``tokenizer.model``, from the tokenizer itself.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_sd = to_hf_state_dict(state_dict, cfg)
    if dtype is not None:
        hf_sd = {k: v.to(dtype) for k, v in hf_sd.items()}
    for stale in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        stale.unlink()  # a previous export with another shard count must not leave extra files
    save_safetensors(hf_sd, out, max_shard_size)
    extra = {**_special_ids(tokenizer_dir), **(extra_config or {})}
    first_dtype = next(iter(hf_sd.values())).dtype
    config = hf_config(cfg, dtype or first_dtype, extra)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    (out / "generation_config.json").write_text(json.dumps({"_from_model_config": True, **gen}, indent=2) + "\n")
    if tokenizer_dir is not None:
        copy_tokenizer(tokenizer_dir, out)
    return out


def import_hf(hf_dir: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a local HF Llama/Mistral directory; return our config and state dict (dtypes kept)."""
    path = Path(hf_dir)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} has no config.json; pass a local Hugging Face model directory (no hub access)")
    hf = json.loads((path / "config.json").read_text())
    cfg = model_config_from_hf(hf, name=hf.get("_name_or_path") or path.name)
    return cfg, from_hf_state_dict(load_weights(path), cfg)


