"""A rank that hangs makes the others exit within train.collective_timeout_s, not never.

Under torchrun a rank that *dies* is noticed by the launcher, which stops the others at once
(test_crash_resume.py times that). Launchers that do not watch their processes (mpirun without
its own abort, srun without --kill-on-bad-exit) and ranks that hang rather than die rely on the
collective timeout: here two processes are started by hand, rank 1 stops responding after step 3,
and rank 0 must give up on its next collective after 5 s with an error naming the timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess

from clitools import PY, ROOT, cli_env, entry, free_port, tiny_train_args
from faultkit import latest


def test_a_hung_rank_times_out_the_others(tiny_data, tmp_path):
    args = tiny_train_args(tiny_data, tmp_path, "checkpoint.every=2", "train.collective_timeout_s=5")
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = cli_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=port, LLMTRAIN_FAULT="stall_at_step=3,rank=1")
        procs.append(subprocess.Popen([PY, *entry(env), *args], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        out, err = procs[0].communicate(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait()
    assert procs[0].returncode == 2, err[-3000:]
    assert "llmtrain train: error: rank 0: a collective operation failed at step 4" in err
    assert "collectives give up after train.collective_timeout_s=5 s" in err
    assert f"The last complete checkpoint is {tmp_path / 't' / 'step_000002'}" in err
    assert "Timed out waiting 5000ms" in err  # gloo's own words: the timeout, not a crash, ended it
    assert latest(tmp_path / "t") == "step_000002"
