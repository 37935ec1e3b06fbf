"""The stall watchdog: a rank that makes no progress stops the job within train.stall_timeout_s, named.

Two gloo ranks started by hand (no launcher that would stop the others for us); rank 1's loader
hangs at step 3. With a collective timeout of 120 s the job must end within a few seconds of the
stall timeout (5 s), non-zero on both ranks, with a message naming rank 1, its host and phase. A
normal run with slow phases on one rank (first step, evaluation, checkpoint save, each longer than
the stall timeout) must finish as if no watchdog were there.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

from clitools import PY, ROOT, cli_env, entry, free_port, losses_by_step, tiny_train_args
from faultkit import Run, latest

EXIT_STALLED = 3


def _start_two_ranks(args: list[str], fault: str) -> list[subprocess.Popen]:
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = cli_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=port, LLMTRAIN_FAULT=fault)
        procs.append(subprocess.Popen([PY, *entry(env), *args], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


def _finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int | None, str]]:
    out = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=timeout)
            out.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait()
    return out


def test_a_rank_stalled_in_its_loader_is_named_and_the_job_stops_fast(tiny_data, tmp_path):
    args = tiny_train_args(tiny_data, tmp_path, "checkpoint.every=2", "train.collective_timeout_s=120",
                           "train.stall_timeout_s=5")
    started = time.monotonic()
    (rc0, err0), (rc1, err1) = _finish(_start_two_ranks(args, "stall_in_data_at_step=3,rank=1"), timeout=110)
    elapsed = time.monotonic() - started
    assert rc0 == EXIT_STALLED, err0[-3000:]
    assert rc1 not in (0, None), err1[-3000:]
    assert elapsed < 100, f"took {elapsed:.0f} s: the collective timeout, not the watchdog, ended it"
    host = socket.gethostname()
    assert f"llmtrain train: error: stalled rank: rank 1 (host {host}, pid " in err0, err0[-3000:]
    assert "step 3, phase 'data'" in err0
    assert "rank 0 on " in err0 and " s for them (> train.stall_timeout_s=5 s)" in err0
    assert "instead of after train.collective_timeout_s=120 s" in err0
    assert f"The last complete checkpoint is {tmp_path / 't' / 'step_000002'}" in err0
    assert "Timed out waiting" not in err0  # gloo's timeout never fired
    # the stalled rank, whose threads still run, says so itself and shows where it hangs
    # the stalled rank says so itself (or, when rank 0 left first, that it cannot read the heartbeats any
    # more) and shows where it hangs
    assert rc1 == EXIT_STALLED, err1[-3000:]
    assert "[llmtrain] rank 1 made no progress; its Python stacks:" in err1 and "_block_forever" in err1
    assert "stalled rank: rank 1 (host" in err1 or "rank 1 on " in err1
    assert latest(tmp_path / "t") == "step_000002"  # no checkpoint written on the way out


def test_slow_first_step_evaluation_and_saves_are_not_a_stall(tiny_data, tmp_path):
    args = tiny_train_args(tiny_data, tmp_path, "checkpoint.every=4", "train.eval_every=4",
                           "train.collective_timeout_s=120", "train.stall_timeout_s=1")
    fault = "first_step_delay_s=2.5,eval_delay_s=2.5,save_delay_s=2.5,rank=1"
    (rc0, err0), (rc1, err1) = _finish(_start_two_ranks(args, fault), timeout=240)
    assert (rc0, rc1) == (0, 0), err0[-3000:] + err1[-3000:]
    assert "stall" not in err0 + err1
    assert sorted(losses_by_step(tmp_path / "t")) == list(range(1, 9))


def test_under_torchrun_the_heartbeats_go_through_the_agent_store(tiny_data, tmp_path):
    """torchrun hosts the rendezvous store in its agent: the watchdog reads the heartbeats there."""
    args = tiny_train_args(tiny_data, tmp_path, "checkpoint.every=2", "train.collective_timeout_s=120",
                           "train.stall_timeout_s=5")
    run = Run(args, tmp_path / "logs", nproc=2, fault="stall_in_data_at_step=3,rank=1")
    rc = run.finish(timeout=150)
    assert rc != 0, run.output()
    assert "stalled rank: rank 1 (host " in run.stderr and "step 3, phase 'data'" in run.stderr, run.output()
    assert re.search(r"exitcode\s*:\s*3\b", run.stderr), run.output()  # torchrun's report of a worker
    assert "Timed out waiting" not in run.stderr
