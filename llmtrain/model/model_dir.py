"""An llmtrain model directory: ``model.safetensors`` (our names) + ``model.yaml`` + ``tokenizer/``.

It is the hand-off format for weights that did not come from a training run (``llmtrain import-hf``):
fine-tuning, eval and generation can start from it like from a checkpoint's weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml

from llmtrain.config.base import build, to_dict
from llmtrain.config.loader import read_yaml
from llmtrain.config.schema import ModelConfig
from llmtrain.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.yaml"
TOKENIZER_SUBDIR = "tokenizer"


def save_model_dir(out_dir: str | Path, cfg: ModelConfig, state_dict: dict[str, torch.Tensor], *,
                   tokenizer_files: list[Path] | None = None) -> Path:
    """Write weights (the tied output projection is stored once), config and tokenizer files."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()
          if not (cfg.tie_embeddings and k == "output.weight")}
    save_file(sd, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / CONFIG_FILE).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if tokenizer_files:
        tok = out / TOKENIZER_SUBDIR
        tok.mkdir(exist_ok=True)
        for f in tokenizer_files:
            shutil.copy2(f, tok / f.name)
    return out


def is_model_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / WEIGHTS_FILE).is_file() and (p / CONFIG_FILE).is_file()


def load_model_dir(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and state dict of a model directory (tied weights re-shared)."""
    from safetensors.torch import load_file

    p = Path(path)
    if not is_model_dir(p):
        raise CheckpointError(f"{p} is not an llmtrain model directory (needs {WEIGHTS_FILE} and {CONFIG_FILE}); "
                              "create one with `llmtrain import-hf --hf-dir DIR --out DIR`")
    cfg = build(ModelConfig, read_yaml(p / CONFIG_FILE), source=str(p / CONFIG_FILE))
    try:
        sd = load_file(str(p / WEIGHTS_FILE))
    except Exception as e:  # safetensors raises its own error types for truncated or damaged files
        raise CheckpointError(f"{p / WEIGHTS_FILE} is truncated or damaged ({e}); use an intact copy or an "
                              f"earlier checkpoint") from None
    if cfg.tie_embeddings:
        sd["output.weight"] = sd["tok_embeddings.weight"]
    return cfg, sd
