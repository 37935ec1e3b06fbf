"""Reading DeepSpeed's own ``*.pt`` files with torch's restricted unpickler instead of full pickle.

DeepSpeed 0.19 passes ``weights_only=False`` to ``torch.load`` wherever it reads its checkpoints
(``load_checkpoint``, the ZeRO and universal loaders, ``ds_to_universal``, ``zero_to_fp32``): full
pickle, so a tampered ``*_states.pt`` could run code on resume or consolidation. While
:func:`restricted_torch_load` is active, every ``torch.load`` reads with ``weights_only=True``,
which builds only tensors, containers, numbers and strings, plus the few DeepSpeed classes its
files hold (``ALLOWED_TYPES``, collected from real checkpoints of ZeRO 0-3, fp32/bf16/fp16, with
and without optimizer/parameter offload, and their universal conversions). Anything else is
refused before it is built: one :class:`UnsafeCheckpointFile` error naming the file, the type and
the opt-in that reads it with full pickle (only for files the user trusts).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import re
from collections.abc import Iterator
from typing import Any

import torch

from llmtrain.errors import CheckpointError

# module.qualname of every non-builtin type DeepSpeed pickles into its checkpoint files
ALLOWED_TYPES = (
    "deepspeed.runtime.zero.config.ZeroStageEnum",  # "zero_stage" of every ZeRO optimizer state
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",  # "loss_scaler" (static: fp32, bf16, fp16 with a fixed scale)
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",  # "loss_scaler" of fp16 with dynamic scaling
    "deepspeed.utils.tensor_fragment.fragment_address",  # "param_slice_mappings" of ZeRO-1/2
)

# how `llmtrain train` / `finetune` read a checkpoint's DeepSpeed files with full pickle instead
RESUME_OPT_IN = "resume with --set checkpoint.trust_pickle=true"
_REFUSED = re.compile(r"GLOBAL ([\w.]+)")


class UnsafeCheckpointFile(CheckpointError):
    """A checkpoint file holding a pickled object the restricted unpickler will not build."""


def allowed_types() -> list[type]:
    """The classes of :data:`ALLOWED_TYPES` (imports DeepSpeed)."""
    out = []
    for name in ALLOWED_TYPES:
        module, _, attr = name.rpartition(".")
        out.append(getattr(importlib.import_module(module), attr))
    return out


def refused_type(error: BaseException) -> str | None:
    """The ``module.name`` torch's restricted unpickler refused, or None when ``error`` is another failure
    (a damaged file fails the restricted unpickler too, without naming a global)."""
    text = str(error)
    m = _REFUSED.search(text) if "Weights only load failed" in text else None
    return m.group(1) if m else None


def unsafe_file_error(path: Any, refused: str, opt_in: str | None) -> UnsafeCheckpointFile:
    trust = (f"; only if you trust this file (written by your own jobs, e.g. with another DeepSpeed version), read "
             f"it with full pickle: {opt_in}") if opt_in else ""
    return UnsafeCheckpointFile(
        f"{path} holds a pickled {refused}, which is not among the types DeepSpeed's checkpoint files contain, "
        f"so it was refused and nothing in it ran (DeepSpeed's *.pt files are read with torch's restricted "
        f"unpickler, weights_only=True; a tampered file can run code when fully unpickled). Use a checkpoint "
        f"you wrote, or an earlier step{trust}")


_active = 0


@contextlib.contextmanager
def restricted_torch_load(opt_in: str | None) -> Iterator[None]:
    """While active, ``torch.load`` ignores ``weights_only=False`` and allows only :data:`ALLOWED_TYPES`.

    ``opt_in`` is how the user reads the files with full pickle instead (named in the error; None: no way).
    Re-entrant; restores ``torch.load`` on exit. Forked worker processes inherit the patch.
    """
    global _active
    if _active:
        yield
        return
    original = torch.load
    allowed = allowed_types()

    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        kwargs.pop("pickle_module", None)  # torch refuses a pickle module together with weights_only
        try:
            with torch.serialization.safe_globals(allowed):
                return original(f, *args, **kwargs)
        except pickle.UnpicklingError as e:
            refused = refused_type(e)
            if refused is None:
                raise  # not a refusal: a damaged file, reported as such by the caller
            path = f if isinstance(f, (str, os.PathLike)) else getattr(f, "name", f)  # a path, or an open file
            raise unsafe_file_error(path, refused, opt_in) from None

    torch.load = load
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        torch.load = original
