"""Full fp32 weights from DeepSpeed's own checkpoint files, for checkpoints without ``model.safetensors``.

ZeRO stage 0 keeps the whole module in ``mp_rank_00_model_states.pt``; stages 1-3 keep the fp32
weights partitioned in ``*optim_states.pt``, which DeepSpeed's ``zero_to_fp32`` merges. Both are read
with torch's restricted unpickler (:mod:`llmtrain.engine.safe_load`: tensors, containers and the few
DeepSpeed classes its files hold), which cannot run code hidden in a tampered file. Files holding
anything else are refused, naming the file, the type and the opt-in (``allow_unpickle``;
``llmtrain export --from-deepspeed-states --trust-pickle``) that reads ZeRO 1-3 states with full pickle
(a stage-0 module state dict never needs it).
"""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import torch

from llmtrain.engine.safe_load import restricted_torch_load
from llmtrain.errors import CheckpointError
from llmtrain.modelio.layout import WEIGHTS, damaged

# the engine wraps the model in a loss module, hence the "model." prefix on every key
_MODULE_PREFIX = "model."


def export_opt_in(step_dir: Path) -> str:
    """How `llmtrain export` reads ``step_dir``'s DeepSpeed files with full pickle (named in refusals)."""
    return f"`llmtrain export --checkpoint {step_dir} --out DIR --from-deepspeed-states --trust-pickle`"


def consolidate_deepspeed(step_dir: Path, *, allow_unpickle: bool = False,
                          opt_in: str | None = None) -> dict[str, torch.Tensor]:
    """The fp32 state dict of a DeepSpeed step directory (our names, no ``model.`` prefix).

    DeepSpeed's files are read with the restricted unpickler unless ``allow_unpickle``; a refused
    file is an UnsafeCheckpointFile naming ``opt_in`` (default: the export flag).
    """
    run_dir, tag = step_dir.parent, step_dir.name
    reading = contextlib.nullcontext() if allow_unpickle else restricted_torch_load(opt_in or export_opt_in(step_dir))
    if list(step_dir.glob("*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        try:
            with reading:
                merged = get_fp32_state_dict_from_zero_checkpoint(str(run_dir), tag=tag)
        except CheckpointError:
            raise
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError) as e:
            raise damaged(step_dir, e) from e
        return {k.removeprefix(_MODULE_PREFIX): v for k, v in merged.items()}
    files = sorted(step_dir.glob("mp_rank_*_model_states.pt"))
    if not files:
        raise CheckpointError(f"{step_dir} holds neither {WEIGHTS} nor DeepSpeed model states; it is not a usable checkpoint")
    try:  # a module state dict needs nothing beyond the allow-list: never read with full pickle
        with restricted_torch_load(None):
            states = torch.load(files[0], map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError) as e:
        raise damaged(step_dir, e) from e
    return {k.removeprefix(_MODULE_PREFIX): v.float() for k, v in states["module"].items()}
