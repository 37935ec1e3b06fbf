"""Guards against bad steps: runs of non-finite losses/gradients, and loss spikes."""

from __future__ import annotations

import math
import statistics
from collections import deque

from llmtrain.distributed.logging import get_logger
from llmtrain.errors import UserError
from llmtrain.training.callbacks.base import Callback, LoopState, StepOutcome

log = get_logger(__name__)


class TrainingDiverged(UserError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class NonFiniteGuard(Callback):
    """Stops the run after ``limit`` consecutive non-finite steps; no periodic save inside such a run
    (it would rotate out the last good checkpoint)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.run_length = 0

    def on_step_end(self, state: LoopState, outcome: StepOutcome) -> None:
        bad = not math.isfinite(outcome.loss) or (outcome.skipped and not outcome.spike)
        self.run_length = self.run_length + 1 if bad else 0
        if self.run_length >= self.limit:
            raise TrainingDiverged(
                f"{self.run_length} consecutive steps (up to step {state.step}) had a non-finite loss or gradient; "
                f"training stopped. The last good checkpoint is "
                f"{state.last_checkpoint or 'none (no checkpoint was written yet)'}. "
                f"Lower optim.lr, raise optim.warmup_steps, use train.precision=bf16/fp32, or check the data.")

    def allows_checkpoint(self, state: LoopState) -> bool:
        return self.run_length == 0


class SpikeGuard(Callback):
    """Flags a loss more than ``zscore`` standard deviations above the mean of the last 100 steps;
    with ``skip`` the optimizer drops that step's update."""

    def __init__(self, zscore: float, skip: bool, window: int = 100) -> None:
        self.zscore, self.skip = zscore, skip
        self.recent: deque[float] = deque(maxlen=window)

    def judge_loss(self, loss: float, state: LoopState) -> str | None:
        if not self._is_spike(loss, state.step + 1):
            return None
        return "skip" if self.skip else "flag"

    def _is_spike(self, loss: float, step: int) -> bool:
        if not self.zscore or len(self.recent) < 10 or not math.isfinite(loss):
            return False
        mean, std = statistics.fmean(self.recent), statistics.pstdev(self.recent)
        if std > 0 and (loss - mean) / std > self.zscore:
            log.info(f"[llmtrain] loss spike at step {step}: {loss:.4f} vs mean {mean:.4f} "
                     f"(z={(loss - mean) / std:.1f}){'; step skipped' if self.skip else ''}")
            return True
        return False

    def on_step_end(self, state: LoopState, outcome: StepOutcome) -> None:
        if math.isfinite(outcome.loss):
            self.recent.append(outcome.loss)
