"""Weights loaded layer by layer into a model whose parameters are partitioned across ranks (ZeRO-3).

No rank holds a whole state dict: the files are opened lazily (safetensors headers; ``.bin`` files
memory-mapped), one layer is made whole on every rank at a time, rank 0 (the writer) copies that
layer's tensors in, and the engine re-partitions it. Names and shapes are checked against the files'
headers on every rank before the first collective, so a wrong file fails everywhere with the same
message instead of hanging the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from llmtrain.distributed.logging import get_logger
from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.modelio.layout import STATE, TOKENIZER_SUBDIR, read_model_config, resolve_checkpoint
from llmtrain.modelio.weights import TensorReader, open_weights

if TYPE_CHECKING:
    from llmtrain.modelio.load import Partitioning

log = get_logger(__name__)
_TIED_OUTPUT = "output.weight"


def read_lazily(path: Path) -> tuple[ModelConfig, TensorReader, Path, Path | None]:
    """(config, lazy tensors under our names, directory with metadata, tokenizer directory or None)."""
    from llmtrain.modelio.model_dir import is_model_dir

    if is_model_dir(path):
        return read_model_config(path), open_weights(path), path, path / TOKENIZER_SUBDIR
    if (path / "config.json").is_file() and not (path / STATE).is_file():
        cfg, reader = _hf_reader(path)
        return cfg, reader, path, path
    step = resolve_checkpoint(path)
    return read_model_config(step), open_weights(step), step, step / TOKENIZER_SUBDIR


def _hf_files(hf_dir: Path) -> list[Path]:
    for stem in ("model.safetensors", "pytorch_model.bin"):
        if (hf_dir / stem).is_file():
            return [hf_dir / stem]
        index = hf_dir / f"{stem}.index.json"
        if index.is_file():
            from llmtrain.modelio.hf import shard_files

            return shard_files(index)
    raise CheckpointError(f"{hf_dir} has no model.safetensors, sharded safetensors index or pytorch_model.bin; "
                          "point at a Hugging Face model directory saved with save_pretrained")


def _hf_reader(hf_dir: Path) -> tuple[ModelConfig, TensorReader]:
    """A Hugging Face directory's tensors under our names (the key map of :mod:`llmtrain.modelio.hf.keys`)."""
    from llmtrain.modelio.hf.families import model_config_from_hf, read_source_config
    from llmtrain.modelio.hf.keys import expected_shapes, to_hf_state_dict

    hf = read_source_config(hf_dir) or {}  # a clear CheckpointError for invalid JSON
    cfg = model_config_from_hf(hf, name=hf.get("_name_or_path") or hf_dir.name)
    reader = TensorReader.of_files(_hf_files(hf_dir))
    have = set(reader.names())
    rename: dict[str, str] = {}
    for ours in expected_shapes(cfg):
        theirs = next(iter(to_hf_state_dict({ours: torch.empty(0)}, cfg)))
        for candidate in (theirs, theirs.removeprefix("model.")):  # *ForCausalLM or the bare *Model
            if candidate in have:
                rename[candidate] = ours
    return cfg, reader.renamed(rename)


def model_parts(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` units to load or gather one at a time: a Transformer gives one per layer plus the
    embedding, final norm and output; wrappers without parameters of their own (a classifier around its
    backbone) are descended into. Modules without parameters (RoPE tables) are left out."""
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, nn.ModuleList):
            for i, item in enumerate(child):
                if any(True for _ in item.parameters()):
                    yield f"{full}.{i}", item
        elif any(True for _ in child.parameters(recurse=False)):
            yield full, child
        elif any(True for _ in child.parameters()):
            yield from model_parts(child, f"{full}.")


def _check(model: nn.Module, reader: TensorReader, part: Partitioning, source: Path) -> None:
    params = dict(model.named_parameters())  # a tied output projection appears once, as the embedding
    have = set(reader.names())
    missing = [k for k in params if k not in have]
    unexpected = [k for k in have if k not in params and k != _TIED_OUTPUT and not k.startswith("rope.")]
    if missing or unexpected:
        raise CheckpointError(f"weights in {source} do not fit the model config: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]} (LoRA checkpoints must be saved merged)")
    wrong = [f"{k}: {reader.shape(k)} in the file, {part.full_shape(p)} in the model" for k, p in params.items()
             if reader.shape(k) != part.full_shape(p)]
    if wrong:
        raise CheckpointError(f"weights in {source} do not fit its model config ({'; '.join(wrong[:3])}): the config "
                              f"and the weights come from different models")


@torch.no_grad()
def fill_partitioned(model: nn.Module, reader: TensorReader, part: Partitioning, *, source: Path) -> None:
    """Copy ``reader``'s tensors into ``model``'s partitioned parameters, one part (layer) at a time."""
    _check(model, reader, part, source)
    done: set[int] = set()
    for prefix, module in model_parts(model):
        named = [(f"{prefix}.{n}", p) for n, p in module.named_parameters() if id(p) not in done]
        if not named:
            continue  # a tied output projection, filled with the embedding
        with part.whole([p for _, p in named]):
            if part.writer:
                for name, p in named:
                    p.data.copy_(reader.get(name))
        done.update(id(p) for _, p in named)
    ranks = dist.get_world_size() if dist.is_initialized() else 1
    log.info("[llmtrain] loaded %s layer by layer into the partitions of %d ranks", source, ranks)
