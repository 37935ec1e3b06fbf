"""Hugging Face model directories on local disk: export to and import from the family's own classes.

The only code in llmtrain that knows Hugging Face names. Per family, a module holds the config map
(:mod:`~llmtrain.modelio.hf.llama`, ``mistral``, ``qwen2``, ``qwen3``; chosen in
:mod:`~llmtrain.modelio.hf.families`); the families share one weight-name map
(:mod:`~llmtrain.modelio.hf.keys`). This module holds what every family
shares: (sharded) safetensors files and ``pytorch_model.bin``; the tokenizer, its special ids and
``generation_config.json`` are :mod:`llmtrain.modelio.hf.tokenizer`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.modelio.hf.families import (
    hf_config,
    model_config_from_hf,
    read_source_config,
    source_config_files,
)
from llmtrain.modelio.hf.keys import expected_shapes, from_hf_state_dict, to_hf_state_dict
from llmtrain.modelio.hf.tokenizer import (
    export_tokenizer,
    hf_tokenizer_files,
    special_token_ids,
    write_generation_config,
)

__all__ = ["expected_shapes", "export_hf", "export_tokenizer", "from_hf_state_dict", "hf_config", "hf_tokenizer_files",
           "import_hf", "model_config_from_hf", "read_hf_weights", "read_source_config", "save_safetensors",
           "source_config_files", "special_token_ids", "to_hf_state_dict", "write_generation_config"]


_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
SIZE_FORMS = "a byte count or a number with K/M/G/T (powers of 1000: 5G = 5GB) or KiB/MiB/GiB/TiB (powers of 1024)"


def parse_size(size: int | str) -> int:
    """Bytes in a shard-size limit: ``5G``, ``5GB``, ``5gb``, ``2.5GB`` (powers of 1000, as Hugging Face
    reads ``max_shard_size``), ``5GiB`` (powers of 1024) or a byte count.

    ``5G`` means what a user typing it means (5 GB): refusing it sent people to a traceback. Raises
    ValueError naming the value and the accepted forms; zero, negative, NaN and infinite sizes too.
    """
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise ValueError(f"max_shard_size {size!r} is not a size; use {SIZE_FORMS}")
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"max_shard_size {size} must be >= 1 byte")
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt]i?)b?|(b))?\s*", size, re.IGNORECASE)
    if not m:
        raise ValueError(f"max_shard_size {size!r} is not a size; use {SIZE_FORMS}, e.g. 5GB, 500MB, 2GiB")
    n = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])
    if n < 1:
        raise ValueError(f"max_shard_size {size!r} is below 1 byte; use {SIZE_FORMS}, e.g. 5GB")
    return n


def save_safetensors(sd: dict[str, torch.Tensor], out_dir: Path, max_shard_size: int | str = "2GB",
                     prefix: str = "model") -> list[Path]:
    """Write ``<prefix>.safetensors``, or numbered shards plus ``<prefix>.safetensors.index.json``."""
    from safetensors.torch import save_file

    limit = parse_size(max_shard_size)
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


def read_hf_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF directory: safetensors (single or sharded) or ``pytorch_model.bin``."""
    from safetensors.torch import load_file

    for stem, loader in (("model.safetensors", load_file),
                         ("pytorch_model.bin", lambda p: torch.load(p, map_location="cpu", weights_only=True))):
        if (model_dir / stem).is_file():
            return _read_weights_file(model_dir / stem, loader)
        index = model_dir / f"{stem}.index.json"
        if index.is_file():
            sd: dict[str, torch.Tensor] = {}
            for f in shard_files(index):
                sd.update(_read_weights_file(f, loader))
            return sd
    raise CheckpointError(f"{model_dir} has no model.safetensors, sharded safetensors index or pytorch_model.bin; "
                          "point at a Hugging Face model directory saved with save_pretrained")


def shard_files(index: Path) -> list[Path]:
    """The weight files a ``*.index.json`` of a sharded Hugging Face checkpoint lists (CheckpointError if unusable)."""
    try:
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index} is unreadable or has no weight_map ({type(e).__name__}: {e}); restore it "
                              f"from the Hugging Face model directory") from None
    missing = [f for f in files if not (index.parent / f).is_file()]
    if missing:
        raise CheckpointError(f"{index} lists {', '.join(missing[:3])} but {index.parent} lacks "
                              f"{'it' if len(missing) == 1 else 'them'}; the download is incomplete")
    return [index.parent / f for f in files]


def _read_weights_file(path: Path, loader: Any) -> dict[str, torch.Tensor]:
    """One weight file; a damaged file, or a pickle the restricted unpickler refuses, is a CheckpointError."""
    import pickle

    try:
        return dict(loader(str(path)))
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):  # torch's advice (weights_only=False) would run what it holds
            raise CheckpointError(
                f"{path} holds pickled objects beyond tensors, which torch's restricted unpickler refuses (nothing "
                f"in it ran; fully unpickling it could run code). Convert the model to safetensors where you trust "
                f"it (transformers: model.save_pretrained(DIR, safe_serialization=True)) and use DIR") from None
        raise CheckpointError(f"{path} is truncated or damaged (UnpicklingError: {e}); re-download it") from None
    except Exception as e:  # noqa: BLE001 (safetensors and torch raise their own types for damaged files)
        first = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path} is truncated or damaged ({type(e).__name__}: {first}); re-download it "
                              f"or restore it from the original model directory") from None


def export_hf(state_dict: dict[str, torch.Tensor], cfg: ModelConfig, out_dir: str | Path, *,
              tokenizer_dir: str | Path | None = None, dtype: torch.dtype | None = torch.float32,
              max_shard_size: int | str = "2GB", extra_config: dict[str, Any] | None = None,
              source_config: dict[str, Any] | None = None) -> Path:
    """Write a ``*ForCausalLM`` directory loadable with ``from_pretrained(out_dir)``.

    The class is ``source_config``'s (the config.json the model was imported from, its other fields
    kept), else the simplest native family that computes the model's function (Llama for plain
    models; see :mod:`~llmtrain.modelio.hf.families`). ``dtype=None`` keeps each tensor's dtype. Special-token ids come from ``extra_config`` or, when
    the tokenizer is a SentencePiece ``tokenizer.model``, from the tokenizer itself.
    """
    out = Path(out_dir)
    hf_config(cfg, dtype, source=source_config)  # refuse an unexportable model before writing anything
    out.mkdir(parents=True, exist_ok=True)
    hf_sd = to_hf_state_dict(state_dict, cfg)
    if dtype is not None:
        hf_sd = {k: v.to(dtype) for k, v in hf_sd.items()}
    for stale in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        stale.unlink()  # a previous export with another shard count must not leave extra files
    save_safetensors(hf_sd, out, max_shard_size)
    extra = {**special_token_ids(tokenizer_dir), **(extra_config or {})}
    first_dtype = next(iter(hf_sd.values())).dtype
    config = hf_config(cfg, dtype or first_dtype, extra, source=source_config)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    ids = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    write_generation_config(out, ids, tokenizer_dir)
    if tokenizer_dir is not None:
        export_tokenizer(tokenizer_dir, out)
    return out


def import_hf(hf_dir: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a local HF directory of a native family; return our config and state dict (dtypes kept).

    The directory's config.json (:func:`read_source_config`) is what export writes back."""
    path = Path(hf_dir)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} has no config.json; pass a local Hugging Face model directory (no hub access)")
    from llmtrain.modelio.hf.families import read_source_config

    hf = read_source_config(path)  # a clear CheckpointError for invalid JSON
    cfg = model_config_from_hf(hf, name=hf.get("_name_or_path") or path.name)
    return cfg, from_hf_state_dict(read_hf_weights(path), cfg)


