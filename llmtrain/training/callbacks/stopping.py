"""Ending a run early with a checkpoint: preemption signals and the exit_after_* limits."""

from __future__ import annotations

import time

from llmtrain.training.callbacks.base import Callback, LoopState, StopRequest
from llmtrain.training.signals import EXIT_PREEMPTED, PreemptionFlag


class Preemption(Callback):
    """SIGTERM/SIGUSR1 (Slurm's warning, scancel --signal) and SIGINT (Ctrl-C): checkpoint, then exit 75."""

    def __init__(self) -> None:
        self.flag = PreemptionFlag()

    def on_train_start(self, state: LoopState) -> None:
        self.flag.install()

    def wants_stop(self, state: LoopState) -> bool:
        return self.flag.requested

    def stop(self, state: LoopState) -> StopRequest:
        then = ("; run the same command to resume" if self.flag.name == "SIGINT" else " so the job can be requeued")
        return StopRequest(f"{self.flag.name or 'signal'} received: checkpoint {state.last_checkpoint} written, "
                           f"exiting with code {EXIT_PREEMPTED}{then}", EXIT_PREEMPTED)

    def on_train_end(self, state: LoopState) -> None:
        self.flag.uninstall()


class EarlyExit(Callback):
    """``train.exit_after_steps`` / ``exit_after_minutes``: stop this invocation, resume later."""

    def __init__(self, after_steps: int, after_minutes: float) -> None:
        self.after_steps, self.after_minutes = after_steps, after_minutes
        self.started = time.monotonic()

    def on_train_start(self, state: LoopState) -> None:
        self.started = time.monotonic()

    def wants_stop(self, state: LoopState) -> bool:
        step = state.step + 1  # asked while that step is being taken
        if step >= state.max_steps:
            return False
        by_steps = bool(self.after_steps) and step - state.first_step >= self.after_steps
        by_time = bool(self.after_minutes) and (time.monotonic() - self.started) / 60 >= self.after_minutes
        return by_steps or by_time

    def stop(self, state: LoopState) -> StopRequest:
        return StopRequest(f"stopping at step {state.step} as asked (train.exit_after_*); resume with the same command")
