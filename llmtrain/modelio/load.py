"""Load a model for inference from any of the places llmtrain writes or reads weights.

Accepted: a checkpoint (run directory with ``latest`` or a ``step_*`` directory), an llmtrain model
directory (``model.safetensors`` + ``model.yaml``, from ``llmtrain import-hf``) or a local Hugging
Face Llama directory. A model with a classification head says so in ``head.json``
(``"task": "classification"``, ``labels``/``label_names``, ``pooling``, ``pad_id``); checkpoints
written before ``task`` was recorded are recognised by their ``score.*`` weights. Backbone weights
may be stored with or without the ``backbone.`` prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.model.runtime import ModelRuntime
from llmtrain.modelio.layout import STATE, TOKENIZER_SUBDIR, read_chat_template, read_head
from llmtrain.modelio.weights import tie_output

CLASSIFICATION = "classification"
_HEAD_PREFIX, _BACKBONE_PREFIX = "score.", "backbone."


@dataclass
class LoadedModel:
    model: nn.Module  # the Transformer
    config: ModelConfig
    tokenizer: Any | None
    source: Path
    chat_template: str | None = None
    hf_config: dict[str, Any] | None = None  # the Hugging Face config.json it came from (export writes that class)
    classifier: nn.Module | None = None
    head: dict[str, Any] = field(default_factory=dict)


@dataclass
class Partitioning:
    """How to build and fill a model whose parameters are partitioned across ranks (ZeRO-3, from the engine).

    ``construct()``: modules built inside have partitioned parameters. ``whole(params)``: a collective
    context in which ``params`` are whole on every rank and what ``writer`` writes into them is kept.
    ``full_shape(p)``: the shape of the whole parameter.
    """

    construct: Callable[[], AbstractContextManager[Any]]
    whole: Callable[[list[nn.Parameter]], AbstractContextManager[Any]]
    writer: bool
    full_shape: Callable[[torch.Tensor], tuple[int, ...]]


def _read(path: Path, state_dict: dict[str, torch.Tensor] | None
          ) -> tuple[ModelConfig, dict[str, torch.Tensor], Path, Path | None]:
    """(config, state dict, directory with metadata, tokenizer directory or None)."""
    from llmtrain.modelio.hf.heads import import_hf_dir
    from llmtrain.modelio.layout import read_model_config, resolve_checkpoint
    from llmtrain.modelio.model_dir import is_model_dir, load_model_dir
    from llmtrain.modelio.weights import load_weights

    if state_dict is None and is_model_dir(path):
        cfg, sd = load_model_dir(path)
        return cfg, sd, path, path / TOKENIZER_SUBDIR
    if (path / "config.json").is_file() and not (path / STATE).is_file():
        cfg, sd = import_hf_dir(path)  # a *ForSequenceClassification too (backbone + score.weight)
        return cfg, sd, path, path
    step = resolve_checkpoint(path)
    cfg = read_model_config(step)
    sd = tie_output(dict(state_dict), cfg) if state_dict is not None else load_weights(step, cfg)
    return cfg, sd, step, step / TOKENIZER_SUBDIR


def _is_classifier(head: dict[str, Any], sd: dict[str, torch.Tensor], source: Path) -> bool:
    has_score = any(k.startswith(_HEAD_PREFIX) for k in sd)
    if "task" not in head:  # written before head.json recorded the task
        return has_score
    if head["task"] == CLASSIFICATION and not has_score:
        raise CheckpointError(f"{source}: head.json declares a classifier but the weights have no "
                              f"{_HEAD_PREFIX}* tensors; the checkpoint is incomplete")
    return head["task"] == CLASSIFICATION


def _load_body(model: nn.Module, body: dict[str, torch.Tensor], source: Path, *, assign: bool = False) -> nn.Module:
    try:
        missing, unexpected = model.load_state_dict(body, strict=False, assign=assign)
    except RuntimeError as e:  # shape mismatches raise even with strict=False
        shapes = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise CheckpointError(f"weights in {source} do not fit its model config ({'; '.join(shapes[:3])}): the "
                              f"config and the weights come from different models") from None
    missing = [m for m in missing if not m.startswith("rope.")]
    if missing or unexpected:
        raise CheckpointError(f"weights in {source} do not fit the model config: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]} (LoRA checkpoints must be saved merged)")
    return model


def load_model(path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               runtime: ModelRuntime | None = None, state_dict: dict[str, torch.Tensor] | None = None,
               partitioning: Partitioning | None = None, hf_module: bool = False) -> LoadedModel:
    """Build the model (and classifier, if it has a head) with its tokenizer and chat template.

    ``runtime`` is applied to the built model (default: auto backend, no checkpointing, no compile).
    ``state_dict`` replaces a checkpoint's ``model.safetensors`` (e.g. weights consolidated from
    DeepSpeed's states); the architecture, tokenizer and head still come from ``path``.
    With ``partitioning`` the backbone is built partitioned and filled layer by layer (see
    :func:`llmtrain.modelio.partitioned.fill_partitioned`); ``device`` and ``dtype`` are then the engine's.
    A causal LM of no native family (or any HF directory with ``hf_module``) is the transformers module
    itself (:mod:`llmtrain.modelio.hf.generic`; partitioned too, with ``partitioning``).
    """
    from llmtrain.data.tokenizer import is_tokenizer_dir, load_tokenizer
    from llmtrain.model.heads import SequenceClassifier
    from llmtrain.model.runtime import apply_runtime
    from llmtrain.model.transformer import Transformer
    from llmtrain.modelio.hf.families import read_source_config
    from llmtrain.modelio.hf.heads import as_causal_config, classifier_head, is_sequence_classifier

    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p} does not exist; pass a checkpoint, an llmtrain model directory or a local HF directory")
    from llmtrain.modelio.hf.generic import hf_module_source, load_hf_module

    if hf_module_source(p, force=hf_module):
        return load_hf_module(p, device=device, dtype=dtype, state_dict=state_dict, runtime=runtime,
                              partitioning=partitioning)
    if partitioning is not None and state_dict is None:
        from llmtrain.modelio.partitioned import read_lazily

        cfg, reader, meta_dir, tok_dir = read_lazily(p)
        # the (small) head is read whole; the backbone is only listed here and read layer by layer below
        sd = {k: reader.get(k) if k.startswith(_HEAD_PREFIX) else torch.empty(0) for k in reader.names()}
    else:
        cfg, sd, meta_dir, tok_dir = _read(p, state_dict)
        partitioning = reader = None
    hf_config = read_source_config(meta_dir)
    head = read_head(meta_dir) or (classifier_head(hf_config, int(sd["score.weight"].shape[0]))
                                   if is_sequence_classifier(hf_config) else {})
    classifier = _is_classifier(head, sd, p)
    head_sd = {k.removeprefix(_HEAD_PREFIX): v for k, v in sd.items() if k.startswith(_HEAD_PREFIX)} if classifier else {}
    if reader is not None and partitioning is not None:
        from llmtrain.modelio.partitioned import fill_partitioned

        with partitioning.construct():
            model = Transformer(cfg)
        fill_partitioned(model, reader.renamed({k: k.removeprefix(_BACKBONE_PREFIX) for k in reader.names()
                                                if not (classifier and k.startswith(_HEAD_PREFIX))}),
                         partitioning, source=p)
    else:
        body = tie_output({k.removeprefix(_BACKBONE_PREFIX): v for k, v in sd.items()
                           if not (classifier and k.startswith(_HEAD_PREFIX))}, cfg)
        sd = None  # type: ignore[assignment]
        # one copy of the weights: the model is built without storage and takes the loaded tensors
        # themselves (a model built for real and then filled would hold a second, random copy)
        with torch.device("meta"):
            skeleton = Transformer(cfg)
        model = _load_body(skeleton, body, p, assign=True)
        del body
        if cfg.tie_embeddings:  # assign gives each module its own Parameter: one shared weight again
            model.output.weight = model.tok_embeddings.weight
        model.to(device=device, dtype=dtype)
    model.eval()
    if runtime is not None:
        apply_runtime(model, runtime)
    tokenizer = load_tokenizer(tok_dir) if tok_dir is not None and is_tokenizer_dir(tok_dir) else None
    loaded = LoadedModel(model, cfg, tokenizer, p, hf_config=as_causal_config(hf_config),
                         chat_template=read_chat_template(meta_dir) or
                         (read_chat_template(tok_dir) if tok_dir else None))
    if classifier:
        num_labels = head_sd["weight"].shape[0]
        pad_id = head.get("pad_id", tokenizer.pad_id if tokenizer else 0)
        clf = SequenceClassifier(model, num_labels, pooling=head.get("pooling", "last"), pad_id=pad_id,
                                 bias="bias" in head_sd)  # heads saved before the score layer lost its bias
        clf.score.load_state_dict(head_sd)
        loaded.classifier = (clf if partitioning else clf.to(device=device, dtype=dtype)).eval()
        # the trainer writes the names as "labels"; accept "label_names" too
        names = head.get("label_names") or head.get("labels") or [str(i) for i in range(num_labels)]
        loaded.head = {"num_labels": num_labels, **head, "label_names": names}
    return loaded
