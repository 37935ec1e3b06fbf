"""Preemption signals: SIGTERM/SIGUSR1 (and SIGINT, Ctrl-C) ask for a checkpoint at the next step boundary.

The handler only sets a flag, so a second signal while a checkpoint is being written cannot
interrupt the save; the loop agrees on the flag across ranks (any rank signalled = all stop),
saves, and exits with :data:`EXIT_PREEMPTED` so a batch script can requeue the job. Ctrl-C is the
same request from a person: the work since the last checkpoint is kept instead of lost, and the
one-line message says how to resume.
"""

from __future__ import annotations

import signal
from types import FrameType

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later"; slurm/*.sbatch requeue on this code
HANDLED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class PreemptionFlag:
    """Records the first preemption signal; installed once per training process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> PreemptionFlag:
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""
