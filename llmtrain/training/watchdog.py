"""Stall watchdog: a rank that stops making progress fails the job fast, and by name.

Without it, a rank that hangs (in its data loader, in a Python loop, before a collective) leaves
the others blocked in their next collective until ``train.collective_timeout_s`` (600 s by
default), and the error they print names nobody. Here:

- **Heartbeats.** The loop tells :class:`Heartbeat` each phase it enters (``data``, ``forward``,
  ``backward``, ``all_reduce``, ``optimizer``, ``step_end``, ``evaluation``, ``checkpoint``,
  ``after_step``): a tuple assignment, no I/O. A beat carries a sequence number; every rank runs
  the same sequence of phases (same micro-batch count, evaluation and save steps), so the numbers
  order the ranks' progress without comparing clocks.
- **Published through the process group's TCP store**, by the watchdog thread at most once per
  poll (about once a second), never from the training thread and never through a collective. The
  store is the rendezvous server every rank already reached at ``MASTER_ADDR:MASTER_PORT`` (rank
  0's process, or torchrun's agent), so this works on every launcher and across nodes without a
  shared file system; files under the run directory would need one, and NFS attribute caching
  makes their freshness unreliable. The thread opens its own client connection with its own short
  timeout, so a slow store never blocks training or torch's own use of the store.
- **Detection.** When this rank has been in the same phase for ``train.stall_timeout_s``, the
  thread reads every rank's heartbeat. Ranks whose sequence number is behind the furthest rank's
  are the ones the others wait for: the thread prints one message naming them (rank, host, pid,
  step, phase, for how long) and ends the process with :data:`EXIT_STALLED` at once (no
  checkpoint: the step in flight is incomplete; no teardown: it could block in a collective).
  Every waiting rank does so, so launchers and the Slurm retry see a failed step within about
  ``stall_timeout_s`` plus a poll. The stalled rank itself, if its threads still run, prints the
  same message and its Python stacks, and exits one more stall timeout (at most 30 s) later: its
  exit would break the others' collectives before their own watchdog could name it.
- **No false alarms on slow phases.** All ranks in the same phase (a long save, evaluation, a
  slow collective) are not a stall: nobody is behind. A rank behind the others while in the first
  step of this invocation, in evaluation or in a checkpoint save is not named either (compilation,
  warm-up, a first index build, rank-0-only writes); there the collective timeout stays the bound.
"""

from __future__ import annotations

import faulthandler
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from llmtrain.distributed.env import DistEnv
from llmtrain.distributed.logging import get_logger

log = get_logger(__name__)

EXIT_STALLED = 3
LONG_PHASES = frozenset({"start", "evaluation", "checkpoint"})
STORE_TIMEOUT_S = 30.0
NAMED_AT_MOST = 8


@dataclass(frozen=True)
class Beat:
    """One rank's progress: the ``seq``-th phase it entered, which one, of which step, since when."""

    rank: int
    host: str
    pid: int
    seq: int
    step: int  # the step in progress (1-based, as logged); after the update, the step just done
    phase: str
    since: float  # wall time (time.time()) the phase began
    published: float = 0.0  # wall time the watchdog last wrote it to the store

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Beat:
        return cls(**json.loads(raw.decode()))


class Heartbeat:
    """This rank's current phase; :meth:`beat` is called by the loop and costs a tuple assignment."""

    def __init__(self, rank: int, first_step: int) -> None:
        self.first_step = first_step  # steps done when this invocation started (or resumed)
        self.current = Beat(rank, socket.gethostname(), os.getpid(), 0, first_step + 1, "start", time.time())

    def beat(self, phase: str, step: int) -> None:
        c = self.current
        self.current = Beat(c.rank, c.host, c.pid, c.seq + 1, step, phase, time.time())

    def around(self, phase: str, fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
        """``fn`` wrapped so that its calls run in ``phase`` (then ``step_end`` again)."""
        if fn is None:
            return None

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            step = self.current.step
            self.beat(phase, step)
            try:
                return fn(*args, **kwargs)
            finally:
                self.beat("step_end", step)

        return wrapped


def stalled_ranks(beats: list[Beat | None], first_step: int) -> list[Beat]:
    """The ranks the others wait for: behind the furthest rank and not in a phase allowed to be slow.

    ``None`` (no heartbeat published yet: still starting) is never named.
    """
    known = [b for b in beats if b is not None]
    if not known:
        return []
    furthest = max(b.seq for b in known)
    return [b for b in known if b.seq < furthest and b.phase not in LONG_PHASES and b.step > first_step + 1]


def stall_message(stalled: list[Beat], beats: list[Beat | None], *, me: Beat, now: float, timeout_s: float,
                  collective_timeout_s: float, last_checkpoint: Any) -> str:
    """The one paragraph every rank prints when it stops the job for ``stalled``."""
    furthest = max((b for b in beats if b is not None), key=lambda b: b.seq)
    named = "; ".join(
        f"rank {b.rank} (host {b.host}, pid {b.pid}): step {b.step}, phase '{b.phase}' for {now - b.since:.0f} s"
        + (f", heartbeat last published {now - b.published:.0f} s ago (process frozen or gone?)"
           if b.published and now - b.published > max(10.0, timeout_s / 2) else "")
        for b in stalled[:NAMED_AT_MOST])
    more = f" and {len(stalled) - NAMED_AT_MOST} more" if len(stalled) > NAMED_AT_MOST else ""
    who = "rank" if len(stalled) == 1 else "ranks"
    logs = "rank's log" if len(stalled) == 1 else "ranks' logs"
    seen_by = (f"rank {me.rank} itself noticed it made no progress for {now - me.since:.0f} s"
               if any(b.rank == me.rank for b in stalled) else
               f"rank {me.rank} on {me.host} waited {now - me.since:.0f} s for them")
    return (f"stalled {who}: {named}{more}. The other ranks are at step {furthest.step} (phase '{furthest.phase}'); "
            f"{seen_by} (> train.stall_timeout_s={timeout_s:g} s), so the job stops now (exit code {EXIT_STALLED}, no checkpoint) instead of after "
            f"train.collective_timeout_s={collective_timeout_s:g} s. The last complete checkpoint is "
            f"{last_checkpoint or 'none'}. See the stalled {logs} (each dumps its Python stacks when it can; "
            f"`py-spy dump --pid PID` on its host shows where it hangs), fix the cause (data path, file system, "
            f"host), and relaunch the same command to resume.")


class StallWatchdog:
    """The thread that publishes this rank's heartbeat and stops the job when a rank stalls."""

    def __init__(self, heartbeat: Heartbeat, store: Any, *, world_size: int, timeout_s: float,
                 collective_timeout_s: float, key_prefix: str, command: str,
                 last_checkpoint: Callable[[], Any], exit: Callable[[int], None] = os._exit) -> None:
        self.heartbeat, self.store, self.world_size = heartbeat, store, world_size
        self.timeout_s, self.collective_timeout_s = timeout_s, collective_timeout_s
        self.key_prefix, self.command, self.last_checkpoint, self._exit = key_prefix, command, last_checkpoint, exit
        self.poll_s = min(1.0, timeout_s / 5)
        self.stalled_exit_grace_s = min(max(timeout_s, 2.0), 30.0)
        self._stop = threading.Event()
        self._published_seq = -1
        self._next_check = 0.0
        self._thread = threading.Thread(target=self._run, name="llmtrain-stall-watchdog", daemon=True)

    def key(self, rank: int) -> str:
        return f"{self.key_prefix}/{rank}"

    def start(self) -> StallWatchdog:
        self._publish()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _publish(self) -> None:
        beat = self.heartbeat.current
        now = time.time()
        # a changed phase at once; an unchanged one now and then, as a sign of life
        if beat.seq == self._published_seq and now - self._published_at < max(5.0, self.timeout_s / 4):
            return
        try:
            self.store.set(self.key(beat.rank), replace(beat, published=now).encode())
            self._published_seq, self._published_at = beat.seq, now
        except Exception as e:  # a store problem must not end training; the check below reports it
            log.debug(f"[llmtrain] heartbeat not published: {e}")

    _published_at = 0.0

    def read_all(self) -> list[Beat | None]:
        keys = [self.key(r) for r in range(self.world_size)]
        if self.store.check(keys):
            return [Beat.decode(v) for v in self.store.multi_get(keys)]
        return [Beat.decode(self.store.get(k)) if self.store.check([k]) else None for k in keys]

    def check(self, now: float) -> tuple[str, str] | None:
        """None, or the message to stop with and this rank's part: ``waiting`` for the stalled ranks,
        ``stalled`` itself, or ``unknown`` (the heartbeats cannot be read)."""
        me = self.heartbeat.current
        if now - me.since < self.timeout_s or now < self._next_check:
            return None
        self._next_check = now + self.timeout_s  # no culprit yet: look again after another timeout
        try:
            beats = self.read_all()
        except Exception as e:
            return (f"rank {me.rank} on {me.host} has been in phase '{me.phase}' of step {me.step} for "
                    f"{now - me.since:.0f} s > train.stall_timeout_s={self.timeout_s:g} s, and the other ranks' heartbeats "
                    f"cannot be read from the rendezvous store ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__}): "
                    f"the process that holds it (rank 0 or the launcher) is gone. Stopping with exit code "
                    f"{EXIT_STALLED}, no checkpoint; the last complete checkpoint is "
                    f"{self.last_checkpoint() or 'none'}. See every rank's log (this one's Python stacks are above), then relaunch the same command "
                    f"to resume.", "unknown")
        beats[me.rank] = me
        stalled = stalled_ranks(beats, self.heartbeat.first_step)
        if not stalled:
            return None
        text = stall_message(stalled, beats, me=me, now=now, timeout_s=self.timeout_s,
                             collective_timeout_s=self.collective_timeout_s, last_checkpoint=self.last_checkpoint())
        return text, "stalled" if any(b.rank == me.rank for b in stalled) else "waiting"

    def diagnosis(self) -> str:
        """After a failed collective: the ranks behind the others now, as a sentence ('' if none known)."""
        try:
            beats = self.read_all()
        except Exception:
            return ""
        me = beats[self.heartbeat.current.rank] = self.heartbeat.current
        behind = stalled_ranks(beats, self.heartbeat.first_step)
        now = time.time()
        return "" if not behind else " Ranks behind the others (last heartbeat): " + "; ".join(
            f"rank {b.rank} (host {b.host}, pid {b.pid}): step {b.step}, phase '{b.phase}' for {now - b.since:.0f} s"
            for b in behind[:NAMED_AT_MOST]) + f" (rank {me.rank} is at step {me.step}, phase '{me.phase}')."

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._publish()
            verdict = self.check(time.time())
            if verdict is None or self._stop.is_set():
                continue
            text, part = verdict
            if part != "waiting":
                sys.stderr.write(f"[llmtrain] rank {self.heartbeat.current.rank} made no progress; its Python stacks:\n")
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            sys.stdout.flush()
            sys.stderr.write(f"llmtrain {self.command}: error: {text}\n")
            sys.stderr.flush()
            if part == "stalled":
                # its exit would close its connections, and the waiting ranks' collectives would fail
                # with "connection closed" before their own watchdog names it: let them go first
                self._stop.wait(self.stalled_exit_grace_s)
            self._exit(EXIT_STALLED)
            return


def start_watchdog(env: DistEnv, heartbeat: Heartbeat, *, timeout_s: float, collective_timeout_s: float,
                   command: str, last_checkpoint: Callable[[], Any]) -> StallWatchdog | None:
    """Start the watchdog on this rank of a multi-rank run (None: one rank, or ``timeout_s`` 0)."""
    if timeout_s <= 0 or env.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return None
    if timeout_s >= collective_timeout_s:
        log.info(f"[llmtrain] train.stall_timeout_s={timeout_s:g} >= train.collective_timeout_s="
                 f"{collective_timeout_s:g}: the collective timeout ends a hang first, without naming the rank")
    try:
        store = dist.TCPStore(env.master_addr, env.master_port, is_master=False,
                              timeout=timedelta(seconds=STORE_TIMEOUT_S), wait_for_workers=False)
    except Exception as e:
        log.warning(f"[llmtrain] rank {env.rank}: stall watchdog off, the rendezvous store "
                    f"{env.master_addr}:{env.master_port} is not reachable ({e})")
        return None
    # a torchrun restart reuses its agent's store: keys of an earlier attempt must not be read as current
    prefix = f"llmtrain/heartbeat/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return StallWatchdog(heartbeat, store, world_size=env.world_size, timeout_s=timeout_s,
                         collective_timeout_s=collective_timeout_s, key_prefix=prefix, command=command,
                         last_checkpoint=last_checkpoint).start()
