"""Workers die with their launcher: a worker whose launcher was killed stops within seconds.

When ``kill -9`` hits torchrun (or accelerate, the deepspeed launcher, srun's step daemon, mpirun's
daemon), its workers are re-parented and would train on as orphans, finish the run and write
checkpoints that race a relaunch. A daemon thread notices the parent pid change and ends the process
at once with ``os._exit``: no checkpoint, no interpreter teardown (which could block in a collective
with the other orphans). Only processes started by such a launcher are watched: a single process, or
ranks started by hand (``RANK``... set by the user), may outlive the shell that started them.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from llmtrain.distributed.env import DistEnv

WATCHED = ("torchrun", "accelerate", "deepspeed", "srun", "mpirun")
EXIT_LAUNCHER_GONE = 1
POLL_S = 0.5


def watch_launcher(env: DistEnv, poll_s: float = POLL_S) -> threading.Thread | None:
    """Start the watch for this process when a launcher started it; returns the thread (or None)."""
    parent = os.getppid()
    if env.launcher not in WATCHED or parent <= 1:
        return None

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                sys.stderr.write(f"[llmtrain] rank {env.rank}: the {env.launcher} launcher (pid {parent}) is gone; "
                                 f"stopping this worker without a checkpoint so it cannot race a relaunch\n")
                sys.stderr.flush()
                os._exit(EXIT_LAUNCHER_GONE)

    thread = threading.Thread(target=watch, name="llmtrain-launcher-watch", daemon=True)
    thread.start()
    return thread
