"""Callbacks of the training loop (see :mod:`llmtrain.training.callbacks.base`)."""

from llmtrain.training.callbacks.base import (
    Callback,
    LoopState,
    StepOutcome,
    StopRequest,
    add_callback_factory,
)

__all__ = ["Callback", "LoopState", "StepOutcome", "StopRequest", "add_callback_factory"]
