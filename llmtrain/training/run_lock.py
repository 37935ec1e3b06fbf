"""One writer per run directory: ``<run dir>/run.lock`` names the process that trains into it.

Two jobs pointed at one run directory would interleave ``metrics.jsonl`` and overwrite each other's
checkpoints (a reported final checkpoint could hold the other job's weights). Rank 0 creates the lock
atomically (``O_EXCL``) before anything is written, records host, pid, process start time and Slurm
job, refreshes its modification time every :data:`HEARTBEAT_S` seconds, and removes it at exit. A
second writer is refused, naming the holder. A lock left behind is taken over with a notice when
its holder is provably gone: a dead pid (or a pid reused by another process) on this host, the same
Slurm job (a requeue), or no heartbeat for :data:`STALE_AFTER_S` seconds (a holder on another host
that died without cleaning up). The other ranks learn rank 0's verdict through one broadcast, so
every rank of a refused job exits with the same message.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from llmtrain.distributed.logging import get_logger
from llmtrain.errors import CheckpointError

log = get_logger(__name__)

LOCK_FILE = "run.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot); tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _me() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "started_unix": time.time(),
            "slurm_job": os.environ.get("SLURM_JOB_ID")}


def describe(holder: dict[str, Any]) -> str:
    job = f", Slurm job {holder['slurm_job']}" if holder.get("slurm_job") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')} (started {holder.get('started')}{job})"


def stale_reason(holder: dict[str, Any], age_s: float) -> str | None:
    """Why the recorded holder cannot be writing any more, or None when it may still be."""
    me = _me()
    if holder.get("slurm_job") and holder.get("slurm_job") == me["slurm_job"] and holder.get("pid") != me["pid"]:
        return f"it belongs to this Slurm job {me['slurm_job']} (a requeue or restart)"
    if holder.get("host") == me["host"]:
        pid = holder.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            return f"process {pid} on this host is gone"
        if holder.get("proc_start") and _proc_start(pid) != holder.get("proc_start"):
            return f"process {pid} on this host is another process now (its pid was reused)"
        return None
    if age_s > STALE_AFTER_S:
        return f"its heartbeat stopped {age_s:.0f} s ago (more than {STALE_AFTER_S:.0f} s)"
    return None


class RunLock:
    """The lock of one run directory, held by this process between ``acquire`` and ``release``."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.record: dict[str, Any] | None = None
        self._created_dir = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        self._make_dir()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._judge_existing()
                continue
            except OSError as e:
                raise CheckpointError(f"cannot create the run lock {self.path}: {e}; checkpoint.dir must be a "
                                      f"writable directory") from None
            record = _me()
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(record) + "\n")
            self.record = record
            self._beat = threading.Thread(target=self._heartbeat, name="llmtrain-run-lock", daemon=True)
            self._beat.start()
            return
        raise CheckpointError(f"could not take the run lock {self.path}: another process keeps replacing it")

    def _make_dir(self) -> None:
        for parent in [self.run_dir, *self.run_dir.parents]:
            if parent.exists() and not parent.is_dir():
                raise CheckpointError(f"{parent} is a file, not a directory, so the run directory {self.run_dir} "
                                      f"cannot be created; set checkpoint.dir (or train.run_name) to a directory path")
            if parent.is_dir():
                break
        self._created_dir = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create the run directory {self.run_dir}: {e}; set checkpoint.dir to a "
                                  f"writable directory") from None

    def _judge_existing(self) -> None:
        """Refuse while the holder may be alive; remove a stale lock (then the caller retries)."""
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile
        try:
            holder = json.loads(text)
        except json.JSONDecodeError:
            holder = {}
        reason = stale_reason(holder, age) if holder else "it is unreadable"
        if reason is None:
            raise CheckpointError(
                f"{self.run_dir} is being written by another run: {describe(holder)} holds {self.path}. Two writers "
                f"would interleave metrics and overwrite each other's checkpoints. Wait for it to finish, stop it, or "
                f"pick another train.run_name / checkpoint.dir. If that process is really gone, delete {self.path}")
        try:
            if self.path.read_text() != text:  # someone else took it over meanwhile: judge again
                return
            self.path.unlink()
        except FileNotFoundError:
            return
        log.info(f"[llmtrain] taking over the run lock {self.path} left by {describe(holder)}: {reason}")

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        """Remove the lock if it is still ours (and the run directory, if we created it and it stayed empty)."""
        self._stop.set()
        if self.record is None:
            return
        try:
            if json.loads(self.path.read_text()).get("pid") == self.record["pid"]:
                self.path.unlink()
        except (OSError, json.JSONDecodeError):
            pass
        self.record = None
        if self._created_dir:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only when nothing was written into it

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def hold_run_dir(run_dir: Path, rank: int) -> RunLock:
    """Rank 0 takes the lock; every rank raises rank 0's refusal (one broadcast when distributed).
    Use as a context manager around everything that writes into the run directory."""
    import torch.distributed as dist

    lock = RunLock(run_dir)
    error: CheckpointError | None = None
    if rank == 0:
        try:
            lock.acquire()
        except CheckpointError as e:
            error = e
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        verdict = [str(error) if error else None]
        dist.broadcast_object_list(verdict, src=0)
        if verdict[0] is not None and error is None:
            error = CheckpointError(verdict[0])
    if error is not None:
        raise error
    return lock
