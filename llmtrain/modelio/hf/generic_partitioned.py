"""A transformers module created partitioned across ranks (ZeRO-3) and filled layer by layer.

The module is built inside the engine's partitioned construction (each rank keeps about 1/N of the
parameters from the moment a submodule exists), then :func:`llmtrain.modelio.partitioned.fill_partitioned`
copies the weights in one decoder layer at a time from lazily opened files: the HF directory's
safetensors or a checkpoint's ``model.safetensors`` (the module's own names either way). No rank holds
a whole copy of the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from llmtrain.modelio.hf.generic import model_class, module_config
from llmtrain.modelio.weights import TensorReader

if TYPE_CHECKING:
    from llmtrain.modelio.load import Partitioning


def build_partitioned(hf: dict[str, Any], reader: TensorReader, partitioning: Partitioning, source: Path, *,
                      classifier: bool) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(the partitioned module with ``reader``'s weights, the classification head's tensors read whole)."""
    from transformers.initialization import no_init_weights

    from llmtrain.modelio.partitioned import fill_partitioned

    cls = model_class(hf)
    # no random init: every parameter is overwritten below (and transformers' init indexes into weights,
    # which fails on an empty partition)
    with partitioning.construct(), no_init_weights():
        module = cls._from_config(module_config(hf), dtype=torch.float32)
    module.tie_weights()  # no_init_weights also skips the tying that init_weights does
    params = dict(module.named_parameters())
    # an output weight tied to the embedding is one parameter, filled once (some files store it twice)
    tied = {n for n, _ in module.named_parameters(remove_duplicate=False)} - set(params)
    score = {k.removeprefix("score."): reader.get(k) for k in reader.names() if classifier and k.startswith("score.")}
    body = reader.renamed({k: k.removeprefix("backbone.") for k in reader.names()
                           if not k.startswith("score.") and k.removeprefix("backbone.") not in tied})
    fill_partitioned(module, body, partitioning, source=source)
    return module, score
