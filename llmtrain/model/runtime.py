"""Run-time switches of a built model: attention backend, activation checkpointing, compile.

They change speed and memory, never the function the weights compute, so they are not part of the
architecture (:class:`~llmtrain.model.config.ModelConfig`) and not saved in checkpoints. Like
torchtitan's ``parallelize`` step they are applied to a built model from outside::

    model = Transformer(arch)             # defaults: auto backend, no checkpointing, no compile
    apply_runtime(model, ModelRuntime(activation_checkpointing="full", compile=True))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmtrain.config.base import field

if TYPE_CHECKING:  # the config schema imports this module; keep it free of torch
    from torch import nn

ATTENTION_BACKENDS = ("auto", "flash_attn", "sdpa", "eager")
CHECKPOINTING_MODES = ("none", "full", "selective")


@dataclass
class ModelRuntime:
    """How a model runs (kernels, recomputation, compilation); see the module docstring."""

    attention_backend: str = field("auto", help="auto (flash_attn on CUDA if installed, else sdpa), flash_attn, sdpa or eager",
                                   choices=ATTENTION_BACKENDS)
    activation_checkpointing: str = field("none", help="recompute activations in backward: none, full (every block) or selective (every other block)",
                                          choices=CHECKPOINTING_MODES)
    compile: bool = field(False, help="torch.compile each block (GPU speed; off on CPU)")

    def check(self) -> list[str]:
        out = []
        if self.attention_backend not in ATTENTION_BACKENDS:
            out.append(f"attention_backend: {self.attention_backend!r} is not one of {', '.join(ATTENTION_BACKENDS)}")
        if self.activation_checkpointing not in CHECKPOINTING_MODES:
            out.append(f"activation_checkpointing: {self.activation_checkpointing!r} is not one of "
                       f"{', '.join(CHECKPOINTING_MODES)}")
        return out


RUNTIME_KEYS = tuple(f.name for f in dataclasses.fields(ModelRuntime))


def runtime_field(name: str) -> Any:
    """A copy of ModelRuntime's field ``name`` (default, help, choices) for config sections that embed it."""
    f = next(f for f in dataclasses.fields(ModelRuntime) if f.name == name)
    return field(f.default, help=f.metadata["help"], choices=f.metadata["choices"])


def apply_runtime(model: nn.Module, runtime: ModelRuntime) -> nn.Module:
    """Set ``runtime`` on every :class:`Transformer` inside ``model`` (itself, a classifier's backbone, ...).

    Checkpointing marks blocks (full: all, selective: every other one, starting with the first);
    compile happens lazily on the first CUDA forward (compiling on CPU brings nothing). Returns ``model``.
    """
    from llmtrain.model.transformer import Transformer

    problems = runtime.check()
    if problems:
        raise ValueError("invalid model runtime: " + "; ".join(problems))
    found = [m for m in model.modules() if isinstance(m, Transformer)]
    if not found:
        raise ValueError(f"apply_runtime: {type(model).__name__} contains no llmtrain Transformer")
    for transformer in found:
        transformer.attention_backend = runtime.attention_backend
        transformer.compile_blocks = runtime.compile
        mode = runtime.activation_checkpointing
        for i, block in enumerate(transformer.layers):
            block.checkpointed = mode == "full" or (mode == "selective" and i % 2 == 0)
    return model
