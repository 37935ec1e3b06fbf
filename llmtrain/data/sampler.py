"""The global-batch index rule shared by the pretraining loader and the fine-tuning batch iterator.

Both loaders number their samples globally (a pure function of seed and index decides what sample
``g`` is); this module decides which global indices a rank reads when. Optimizer step ``k``
consumes the indices ``[k·G, (k+1)·G)``; on data-parallel rank ``r`` micro batch ``m`` of the step
takes ``k·G + m·(mb·dp) + r·mb + [0, mb)``. The union over ranks and micro batches of one step is
therefore the same ``G`` indices whatever the data-parallel size, which is what lets a run resume
on another number of processes and continue with exactly the samples an uninterrupted run would
have used. The whole position is one number, ``consumed_samples`` (over all ranks).
"""

from __future__ import annotations

from typing import Any

from llmtrain.config.validate import micro_steps_per_step
from llmtrain.errors import DataError


class GlobalBatchSampler:
    """This rank's global sample indices, micro batch by micro batch, with a resumable position.

    ``consumed_samples`` counts the samples (over all ranks) of finished optimizer steps; the micro
    batches of an unfinished step are not part of the saved position, so a resume replays that
    step, exactly as the optimizer (whose unfinished accumulation is not saved either) needs.
    """

    def __init__(self, *, micro_batch_size: int, global_batch_size: int, dp_rank: int, dp_size: int):
        if micro_batch_size < 1 or dp_size < 1:
            raise ValueError(f"micro_batch_size {micro_batch_size} and dp_size {dp_size} must be >= 1")
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank {dp_rank} outside [0, {dp_size})")
        self.micro_batch_size, self.global_batch_size = micro_batch_size, global_batch_size
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.micro_steps_per_step = micro_steps_per_step(global_batch_size, micro_batch_size, dp_size)
        self.consumed_samples = 0  # samples of finished optimizer steps, over all ranks
        self.micro_step = 0  # micro batches of the current, unfinished step already handed out

    @property
    def position(self) -> int:
        """Global samples handed out so far over all ranks, including the current step's micro batches."""
        return self.consumed_samples + self.micro_step * self.micro_batch_size * self.dp_size

    def next_indices(self) -> range:
        """Global sample indices of this rank's next micro batch; advances the position."""
        start = self.position + self.dp_rank * self.micro_batch_size
        self.micro_step += 1
        if self.micro_step == self.micro_steps_per_step:
            self.micro_step = 0
            self.consumed_samples += self.global_batch_size
        return range(start, start + self.micro_batch_size)

    def state_dict(self) -> dict[str, Any]:
        """The position as of the last finished optimizer step (JSON-able, the same on every rank)."""
        return {"consumed_samples": self.consumed_samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after ``state["consumed_samples"]`` samples, at the start of an optimizer step.

        Any count saved by :meth:`state_dict` is a step boundary, also when the data-parallel size or
        the micro batch changed since (the next step takes ``[c, c + G)`` on any layout), so the only
        check is that the count is a step boundary at all: a non-negative number.
        """
        consumed = int(state["consumed_samples"])
        if consumed < 0:
            raise DataError(f"cannot resume the data loader: consumed_samples {consumed} is negative, so not a step "
                            f"boundary; the checkpoint's trainer state is damaged")
        self.consumed_samples, self.micro_step = consumed, 0
