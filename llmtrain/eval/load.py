"""Load a model for inference from any of the places llmtrain writes or reads weights.

Accepted: a checkpoint (run directory with ``latest`` or a ``step_*`` directory), an llmtrain model
directory (``model.safetensors`` + ``model.yaml``, from ``llmtrain import-hf``) or a local Hugging
Face Llama directory. A checkpoint whose weights include ``score.weight`` is a classifier: its head
is rebuilt from ``head.json`` (``labels``/``label_names``, ``pooling``, ``pad_id``), and backbone weights may
be stored with or without the ``backbone.`` prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmtrain.config.schema import ModelConfig
from llmtrain.data.sft import load_chat_template
from llmtrain.errors import CheckpointError

HEAD_FILE = "head.json"


@dataclass
class LoadedModel:
    model: nn.Module  # the Transformer
    config: ModelConfig
    tokenizer: Any | None
    source: Path
    chat_template: str | None = None
    classifier: nn.Module | None = None
    head: dict[str, Any] = field(default_factory=dict)


def _split_head(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    head = {k: v for k, v in sd.items() if k.startswith("score.")}
    body = {k.removeprefix("backbone."): v for k, v in sd.items() if not k.startswith("score.")}
    return body, head


def _read(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], Path, Path | None]:
    """(config, state dict, directory with metadata, tokenizer directory or None)."""
    from llmtrain.model.hf import import_hf
    from llmtrain.model.model_dir import TOKENIZER_SUBDIR, is_model_dir, load_model_dir
    from llmtrain.training import checkpoint as ckpt

    if is_model_dir(path):
        cfg, sd = load_model_dir(path)
        return cfg, sd, path, path / TOKENIZER_SUBDIR
    if (path / "config.json").is_file() and not (path / ckpt.STATE).is_file():
        cfg, sd = import_hf(path)
        return cfg, sd, path, path
    step = ckpt.resolve_checkpoint(path)
    return ckpt.read_model_config(step), ckpt.load_weights(step), step, step / "tokenizer"


def load_model(path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               attention_backend: str | None = None) -> LoadedModel:
    """Build the model (and classifier, if the weights have a head) with its tokenizer and chat template."""
    from llmtrain.data.tokenizer import is_tokenizer_dir, load_tokenizer
    from llmtrain.model.heads import SequenceClassifier
    from llmtrain.model.transformer import Transformer

    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p} does not exist; pass a checkpoint, an llmtrain model directory or a local HF directory")
    cfg, sd, meta_dir, tok_dir = _read(p)
    if attention_backend:
        cfg.attention_backend = attention_backend
    body, head_sd = _split_head(sd)
    if cfg.tie_embeddings:
        body.setdefault("output.weight", body["tok_embeddings.weight"])
    model = Transformer(cfg)
    try:
        missing, unexpected = model.load_state_dict(body, strict=False)
    except RuntimeError as e:  # shape mismatches raise even with strict=False
        shapes = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise CheckpointError(f"weights in {p} do not fit its model config ({'; '.join(shapes[:3])}): the config "
                              f"and the weights come from different models") from None
    missing = [m for m in missing if not m.startswith("rope.")]
    if missing or unexpected:
        raise CheckpointError(f"weights in {p} do not fit the model config: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]} (LoRA checkpoints must be saved merged)")
    model.to(device=device, dtype=dtype).eval()
    tokenizer = load_tokenizer(tok_dir) if tok_dir is not None and is_tokenizer_dir(tok_dir) else None
    loaded = LoadedModel(model, cfg, tokenizer, p, chat_template=load_chat_template(meta_dir) or
                         (load_chat_template(tok_dir) if tok_dir else None))
    if head_sd:
        head = json.loads((meta_dir / HEAD_FILE).read_text()) if (meta_dir / HEAD_FILE).is_file() else {}
        num_labels = head_sd["score.weight"].shape[0]
        pad_id = head.get("pad_id", tokenizer.pad_id if tokenizer else 0)
        clf = SequenceClassifier(model, num_labels, pooling=head.get("pooling", "last"), pad_id=pad_id)
        clf.score.load_state_dict({k.removeprefix("score."): v for k, v in head_sd.items()})
        loaded.classifier = clf.to(device=device, dtype=dtype).eval()
        # the trainer writes the names as "labels"; accept "label_names" too
        names = head.get("label_names") or head.get("labels") or [str(i) for i in range(num_labels)]
        loaded.head = {"num_labels": num_labels, **head, "label_names": names}
    return loaded
