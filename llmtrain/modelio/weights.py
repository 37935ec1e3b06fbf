"""Consolidated weights on disk: one safetensors file plus the architecture beside it.

This is the only place that knows how tied embeddings are stored: the output projection of a model
with ``tie_embeddings`` is written once (as the embedding; safetensors refuses shared storage anyway)
and re-shared on load. Checkpoints written before that rule stored a copy; they load unchanged.

Nothing here unpickles: a step directory without ``model.safetensors`` is refused with the opt-in
that consolidates DeepSpeed's own ``*.pt`` states (``llmtrain export --from-deepspeed-states``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.modelio.layout import HEAD_FILE, WEIGHTS, write_model_config

_EMBEDDING, _OUTPUT = "tok_embeddings.weight", "output.weight"


def untie_output(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Without the tied output projections (every ``[prefix.]output.weight`` whose embedding is present)."""
    if not cfg.tie_embeddings:
        return dict(state_dict)
    tied = {k for k in state_dict if k.endswith(_OUTPUT) and k[:-len(_OUTPUT)] + _EMBEDDING in state_dict}
    return {k: v for k, v in state_dict.items() if k not in tied}


def tie_output(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """With tied embeddings, point every ``[prefix.]output.weight`` at its embedding tensor (in place)."""
    if cfg.tie_embeddings:
        for k in [k for k in state_dict if k.endswith(_EMBEDDING)]:
            state_dict[k[:-len(_EMBEDDING)] + _OUTPUT] = state_dict[k]
    return state_dict


def save_weights(state_dict: dict[str, torch.Tensor], cfg: ModelConfig, directory: str | Path, *,
                 head: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``model.yaml`` (architecture only) [+ ``head.json``] into ``directory``."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in untie_output(state_dict, cfg).items()}
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    write_model_config(out, cfg)
    if head:
        (out / HEAD_FILE).write_text(json.dumps(head, indent=2))
    return out / WEIGHTS


def _missing_weights_error(directory: Path) -> CheckpointError:
    path = directory / WEIGHTS
    if any(directory.glob("*model_states.pt")) or any(directory.glob("*optim_states.pt")):
        return CheckpointError(
            f"{path} is missing; {directory} holds only DeepSpeed's states. Reading them unpickles DeepSpeed's "
            f"*.pt files, which can run code: only if you trust these files, consolidate them with "
            f"`llmtrain export --checkpoint {directory} --out DIR --from-deepspeed-states` and use DIR")
    return CheckpointError(f"{path} is missing: {directory} holds neither consolidated weights nor DeepSpeed "
                           f"states; it is not a usable checkpoint or model directory")


def load_weights(directory: str | Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The state dict in ``directory/model.safetensors``, tied output projections re-shared."""
    from safetensors.torch import load_file

    d = Path(directory)
    path = d / WEIGHTS
    if not path.is_file():
        raise _missing_weights_error(d)
    try:
        sd = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or damaged files
        raise CheckpointError(f"{path} is truncated or damaged ({e}); use an intact copy or an earlier "
                              f"checkpoint") from None
    return tie_output(sd, cfg)

