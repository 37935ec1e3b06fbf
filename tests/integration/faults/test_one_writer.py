"""One writer per run directory, and workers that die with their launcher.

A second run on a run directory in use is refused (exit 2, naming the holder) while the first trains
on unaffected. When torchrun itself is killed with SIGKILL its workers notice within a second, stop
without writing a checkpoint, and the relaunch takes over the lock they left and resumes exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from clitools import losses_by_step, run_cli, tiny_train_args, torchrun
from faultkit import Run, latest, logged_steps

from llmtrain.training.run_lock import LOCK_FILE


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # exited (a zombie waits for init to reap it)


def test_a_second_writer_is_refused_and_the_first_is_unaffected(tiny_data, tmp_path):
    args = tiny_train_args(tiny_data, tmp_path, "checkpoint.every=4", "train.max_steps=40")
    run_dir = tmp_path / "t"
    first = Run(args, tmp_path / "logs", fault="step_delay_s=0.5")  # 20 s: still training while the second starts
    first.wait_for("step 2", lambda: logged_steps(run_dir) >= 2)
    holder = json.loads((run_dir / LOCK_FILE).read_text())
    assert holder["pid"] == first.proc.pid and holder["host"] == os.uname().nodename

    second = run_cli(args, check=False)
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert f"llmtrain train: error: {run_dir} is being written by another run: pid {first.proc.pid} on " \
           f"{os.uname().nodename}" in second.stderr
    assert first.proc.poll() is None  # still training

    assert first.finish() == 0, first.output()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("kind") == "train"]
    assert steps == list(range(1, 41))  # one writer: every step logged once, in order
    assert latest(run_dir) == "step_000040" and not (run_dir / LOCK_FILE).exists()


def test_workers_stop_when_the_launcher_is_killed_and_the_relaunch_resumes(tiny_data, tmp_path, reference_losses):
    args = tiny_train_args(tiny_data, tmp_path, "checkpoint.every=2")
    run_dir = tmp_path / "t"
    run = Run(args, tmp_path / "logs", nproc=2, fault="step_delay_s=1.0")
    run.wait_for("step 3 after the step-2 checkpoint",
                 lambda: logged_steps(run_dir) >= 3 and (run_dir / "latest").is_file())
    workers = run.children()
    assert len(workers) == 2
    before = latest(run_dir)
    os.kill(run.proc.pid, signal.SIGKILL)  # the launcher only
    run.proc.wait()
    killed = time.monotonic()
    while not all(_gone(pid) for pid in workers):
        if time.monotonic() - killed > 10:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"workers still running 10 s after the launcher died\n{run.output()}")
        time.sleep(0.1)
    time.sleep(1.5)  # a worker that had not stopped would write its step-4 checkpoint by now
    assert latest(run_dir) == before and not (run_dir / "step_000004" / "trainer_state.json").exists()
    assert "launcher (pid" in run.stderr and "is gone; stopping this worker without a checkpoint" in run.stderr

    again = torchrun(2, args)
    assert f"taking over the run lock {run_dir / LOCK_FILE}" in again.stdout + again.stderr
    assert f"resumed from {run_dir / before}" in again.stdout
    assert losses_by_step(run_dir) == reference_losses
