"""Consolidated weights in a checkpoint: when (``checkpoint.consolidate``) and how (streamed, layer by layer).

DeepSpeed's own states are always saved (resume needs them); ``model.safetensors`` beside them is a
convenience for export, evaluation and fine-tuning, and at scale an expensive one: gathering a 70B
model to one rank and writing it at every save costs minutes and, done the old way, twice the
weights in host memory. Here the weights are written one part (a layer) at a time: the engine
gathers a part, rank 0 appends its tensors to the file, the part is released. The file's header
is laid out first from the shapes alone, so neither a full state dict nor a second copy ever exists.

Policy: ``every`` save, only the ``final`` one (the step that reaches ``train.max_steps``), or
``never``; ``auto`` is ``every`` up to :data:`AUTO_EVERY_MAX_PARAMS` parameters and ``final`` above.
A checkpoint without ``model.safetensors`` is consolidated later by ``llmtrain export`` from the
DeepSpeed states.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from llmtrain.distributed.collectives import is_rank0
from llmtrain.distributed.logging import get_logger
from llmtrain.model.flops import num_params
from llmtrain.modelio.layout import WEIGHTS
from llmtrain.modelio.weights import StreamedSafetensors, untie_output
from llmtrain.training.task import TrainingTask

log = get_logger(__name__)

# up to this size consolidating every save costs seconds; above it only the final save consolidates
AUTO_EVERY_MAX_PARAMS = 2_000_000_000


def resolve_policy(policy: str, task: TrainingTask) -> str:
    """``every``, ``final`` or ``never``: ``auto`` decided by the model's parameter count."""
    if policy != "auto":
        return policy
    return "every" if num_params(task.model_config) <= AUTO_EVERY_MAX_PARAMS else "final"


def consolidates(policy: str, task: TrainingTask, *, step: int, max_steps: int) -> bool:
    p = resolve_policy(policy, task)
    return p == "every" or (p == "final" and step >= max_steps)


def _files_of(part: dict[str, torch.Tensor], task: TrainingTask) -> dict[str, dict[str, torch.Tensor]]:
    """One part's tensors per file: the exported weights and the task's extra files (LoRA adapters)."""
    extra = task.extra_weights(part) if task.extra_weights is not None else {}
    weights = task.export_state(task.model, part) if task.export_state is not None else part
    return {WEIGHTS: weights, **extra}


def _parts_of(engine: Any) -> tuple[Iterable[dict[str, torch.Tensor] | None], Iterable[dict[str, torch.Tensor] | None]]:
    """(shapes-only parts, parts) of the engine's weights; an engine that can only hand out its whole
    state dict (``full_state_dict``, the :class:`~llmtrain.engine.base.Engine` protocol) is one part."""
    if hasattr(engine, "state_parts"):
        return engine.state_parts(meta=True), engine.state_parts()
    full = engine.full_state_dict()
    return [full], [full]


def write_consolidated(engine: Any, task: TrainingTask, step_dir: Path) -> dict[str, Any] | None:
    """Stream the model's weights into ``step_dir/model.safetensors`` (+ extra files); every rank calls it.

    Returns (rank 0) the files' sizes and the seconds spent; None on the other ranks.
    """
    start = time.perf_counter()
    meta_parts, parts = _parts_of(engine)
    layouts: dict[str, dict[str, tuple[torch.dtype, tuple[int, ...]]]] = {}
    for part in meta_parts:
        if part is None:
            continue
        for name, tensors in _files_of(part, task).items():
            layouts.setdefault(name, {}).update({k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()})
    # a tied output projection is stored once, as the embedding (see modelio.weights)
    kept = untie_output(dict.fromkeys(layouts.get(WEIGHTS, {}), torch.empty(0)), task.model_config)
    layouts[WEIGHTS] = {k: v for k, v in layouts.get(WEIGHTS, {}).items() if k in kept}
    writers = {name: StreamedSafetensors(step_dir / name, layout) for name, layout in layouts.items()} \
        if is_rank0() else {}
    for part in parts:
        if part is None:
            continue
        for name, tensors in _files_of(part, task).items():
            for key, value in tensors.items():
                if key in layouts[name]:
                    writers[name].write(key, value)
    if not writers:
        return None
    sizes = {name: w.close().stat().st_size for name, w in writers.items()}
    return {"seconds": time.perf_counter() - start, "bytes": sizes}

