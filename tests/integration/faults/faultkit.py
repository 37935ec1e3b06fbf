"""Tools of the failure tests: a training run started in the background, waiting on what it
writes, killing it (one process or the whole launcher tree with all its workers).

Runs are the seconds-long fp32 CPU runs of ``tiny_train_args`` with a checkpoint every 2 steps.
Faults that must happen at an exact step use the test-only ``LLMTRAIN_FAULT`` hooks
(tests/faultinject.py, installed by tests/fault_entry.py); kills and signals are real and come from the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from clitools import BIN, PY, ROOT, cli_env, entry, free_port

EVERY = ("checkpoint.every=2",)


class Run:
    """A `llmtrain train` started in the background (directly or under torchrun), logs in files."""

    def __init__(self, args: list[str], log_dir: Path, *, nproc: int = 1, fault: str = "") -> None:
        env = cli_env(**({"LLMTRAIN_FAULT": fault} if fault else {}))
        cmd = [PY, *entry(env), *args] if nproc == 1 else \
            [str(BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_port", str(free_port()), *entry(env), *args]
        log_dir.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = log_dir / "stdout.txt", log_dir / "stderr.txt"
        self._out = open(self.out_path, "w")  # noqa: SIM115 (kept open while the process runs)
        self._err = open(self.err_path, "w")  # noqa: SIM115
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._out, stderr=self._err)

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"the run exited ({self.proc.returncode}) before {what}\n{self.output()}")
            if time.monotonic() > deadline:
                self.kill_all()
                raise AssertionError(f"timed out waiting for {what}\n{self.output()}")
            time.sleep(0.05)

    def children(self) -> list[int]:
        """Worker processes of a launcher (torchrun starts each in its own session)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return pids

    def kill_all(self) -> None:
        """SIGKILL the launcher and every worker at once, as a node crash would."""
        for pid in [self.proc.pid, *self.children()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()

    def finish(self, timeout: float = 180) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            raise AssertionError(f"the run did not exit within {timeout} s\n{self.output()}") from None
        self._out.close()
        self._err.close()
        return rc

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def output(self) -> str:
        return f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


def latest(run_dir: Path) -> str:
    return (run_dir / "latest").read_text().strip()


def logged_steps(run_dir: Path) -> int:
    """The highest step rank 0 has logged so far (0 before the first)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.strip().endswith("}")]
    return max(steps, default=0)


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Size, mtime and sha256 of every file under ``root``: equal before and after means nothing was touched."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}
