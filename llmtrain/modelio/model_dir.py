"""An llmtrain model directory: ``model.safetensors`` (our names) + ``model.yaml`` + ``tokenizer/``.

It is the hand-off format for weights that did not come from a training run (``llmtrain import-hf``):
fine-tuning, eval and generation can start from it like from a checkpoint's weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.modelio.layout import MODEL_YAML, TOKENIZER_SUBDIR, WEIGHTS, read_model_config
from llmtrain.modelio.weights import load_weights, save_weights


def save_model_dir(out_dir: str | Path, cfg: ModelConfig, state_dict: dict[str, torch.Tensor], *,
                   tokenizer_files: list[Path] | None = None) -> Path:
    """Write weights, architecture and tokenizer files."""
    out = Path(out_dir)
    save_weights(state_dict, cfg, out)
    if tokenizer_files:
        tok = out / TOKENIZER_SUBDIR
        tok.mkdir(exist_ok=True)
        for f in tokenizer_files:
            shutil.copy2(f, tok / f.name)
    return out


def is_model_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / WEIGHTS).is_file() and (p / MODEL_YAML).is_file()


def load_model_dir(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Architecture and state dict of a model directory (tied weights re-shared)."""
    p = Path(path)
    if not is_model_dir(p):
        raise CheckpointError(f"{p} is not an llmtrain model directory (needs {WEIGHTS} and {MODEL_YAML}); "
                              "create one with `llmtrain import-hf --hf-dir DIR --out DIR`")
    cfg = read_model_config(p)
    return cfg, load_weights(p, cfg)
