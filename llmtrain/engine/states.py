"""Full fp32 weights from DeepSpeed's own checkpoint files, for checkpoints without ``model.safetensors``.

ZeRO stage 0 keeps the whole module in ``mp_rank_00_model_states.pt``: it is read with torch's
restricted unpickler (``weights_only=True``), which cannot run code. Stages 1-3 keep the fp32
weights partitioned in ``*optim_states.pt``; only DeepSpeed's ``zero_to_fp32`` can merge them, and it
unpickles those files with full pickle, which can run code hidden in a tampered file. That path is
therefore opt-in (``allow_unpickle``; ``llmtrain export --from-deepspeed-states``) and for files the
user trusts.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from llmtrain.errors import CheckpointError
from llmtrain.modelio.layout import WEIGHTS, damaged

# the engine wraps the model in a loss module, hence the "model." prefix on every key
_MODULE_PREFIX = "model."


def consolidate_deepspeed(step_dir: Path, *, allow_unpickle: bool = False) -> dict[str, torch.Tensor]:
    """The fp32 state dict of a DeepSpeed step directory (our names, no ``model.`` prefix).

    Raises CheckpointError for ZeRO 1-3 states unless ``allow_unpickle`` (see the module docstring).
    """
    run_dir, tag = step_dir.parent, step_dir.name
    if list(step_dir.glob("*optim_states.pt")):
        if not allow_unpickle:
            raise CheckpointError(
                f"{step_dir} has no {WEIGHTS}; its ZeRO-partitioned states can only be merged by DeepSpeed's "
                f"zero_to_fp32, which unpickles them (a tampered file can run code). Only if you trust these "
                f"files: `llmtrain export --checkpoint {step_dir} --out DIR --from-deepspeed-states`")
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        merged = get_fp32_state_dict_from_zero_checkpoint(str(run_dir), tag=tag)
        return {k.removeprefix(_MODULE_PREFIX): v for k, v in merged.items()}
    files = sorted(step_dir.glob("mp_rank_*_model_states.pt"))
    if not files:
        raise CheckpointError(f"{step_dir} holds neither {WEIGHTS} nor DeepSpeed model states; it is not a usable checkpoint")
    # DeepSpeed pickles a dict of tensors, numbers and strings: torch's restricted unpickler reads it
    try:
        states = torch.load(files[0], map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise damaged(step_dir, e) from e
    return {k.removeprefix(_MODULE_PREFIX): v.float() for k, v in states["module"].items()}
