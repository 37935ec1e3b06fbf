"""An llmtrain model directory: ``model.safetensors`` (our names) + ``model.yaml`` + ``tokenizer/``
(+ ``hf_config.json``, the config.json of the Hugging Face model it was imported from).

It is the hand-off format for weights that did not come from a training run (``llmtrain import-hf``):
fine-tuning, eval and generation can start from it like from a checkpoint's weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.modelio.layout import HF_CONFIG_FILE, MODEL_YAML, TOKENIZER_SUBDIR, WEIGHTS, read_model_config
from llmtrain.modelio.weights import load_weights, save_weights


def save_model_dir(out_dir: str | Path, cfg: ModelConfig, state_dict: dict[str, torch.Tensor], *,
                   tokenizer_files: list[Path] | None = None, hf_config: dict[str, Any] | None = None) -> Path:
    """Write weights, architecture, tokenizer files and the source Hugging Face config (export reuses it)."""
    out = Path(out_dir)
    save_weights(state_dict, cfg, out)
    if hf_config is not None:
        (out / HF_CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n")
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
