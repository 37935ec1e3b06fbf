"""Which saved engine states this engine can resume from, checked before anything is built or written.

DeepSpeed 0.19's universal checkpoint (``ds_to_universal`` + ``load_universal``) carries a checkpoint
to another data-parallel size within one ZeRO stage family, but not across stages: its
``zero/optimizer_state.pt`` has one layout for ZeRO-1/2 sources (flat, no ``optimizer_state_dict``,
which ZeRO-3 requires) and another for ZeRO-3 sources (no ``ds_version``, which ZeRO-1/2 require);
the model-states file is copied under the source stage's name only; and ZeRO-3's universal load
copies the first parameter group's hyperparameters onto every group (weight decay on the no-decay
group). ZeRO-0 writes no partitioned optimizer states to convert at all. A stage change is therefore
refused up front with the way out, instead of a DeepSpeed AssertionError after a conversion.
"""

from __future__ import annotations

from pathlib import Path

from llmtrain.errors import CheckpointError


def refuse_another_zero_stage(step_dir: Path, saved_stage: int, zero_stage: int) -> None:
    """Raise CheckpointError when ``step_dir`` was written under another ZeRO stage than ``zero_stage``."""
    if int(saved_stage) == int(zero_stage):
        return
    raise CheckpointError(
        f"cannot resume from {step_dir}: it was written with ZeRO stage {saved_stage} and train.zero_stage is now "
        f"{zero_stage}; DeepSpeed cannot carry optimizer states from one ZeRO stage to another. Resume with "
        f"--set train.zero_stage={saved_stage} (the stage changes memory use, not the results; a different "
        f"number of ranks is fine), or start a new run (another train.run_name). Nothing was written")
