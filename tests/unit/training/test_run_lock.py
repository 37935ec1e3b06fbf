"""The run-directory lock: a live holder refuses a second writer by name; a provably dead one is taken over."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from llmtrain.errors import CheckpointError
from llmtrain.training.run_lock import LOCK_FILE, STALE_AFTER_S, RunLock


def _write_lock(run_dir, **holder):
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"host": "elsewhere", "pid": 1, "proc_start": None, "started": "2024-01-01 00:00:00 +0000",
              "slurm_job": None, **holder}
    (run_dir / LOCK_FILE).write_text(json.dumps(record) + "\n")
    return run_dir / LOCK_FILE


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "ckpt" / "r"
    with RunLock(run) as first:
        first.acquire()
        record = json.loads((run / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["host"] == os.uname().nodename
        with pytest.raises(CheckpointError, match=rf"{run} is being written by another run: pid {os.getpid()} on "
                                                  rf"{os.uname().nodename} \(started .*\) holds {run / LOCK_FILE}"):
            RunLock(run).acquire()
    assert not run.exists()  # the lock created the directory and nothing else was written: both are gone


def test_release_keeps_a_run_directory_with_content(tmp_path):
    run = tmp_path / "r"
    lock = RunLock(run)
    lock.acquire()
    (run / "metrics.jsonl").write_text("{}\n")
    lock.release()
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]


def test_a_dead_holder_on_this_host_is_taken_over_with_a_notice(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path / "r", host=os.uname().nodename, pid=dead.pid)
    with caplog.at_level(logging.INFO, logger="llmtrain"):
        lock = RunLock(tmp_path / "r")
        lock.acquire()
    assert f"taking over the run lock {tmp_path / 'r' / LOCK_FILE} left by pid {dead.pid}" in caplog.text
    assert f"process {dead.pid} on this host is gone" in caplog.text
    assert json.loads((tmp_path / "r" / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_reused_pid_is_not_mistaken_for_the_holder(tmp_path, caplog):
    _write_lock(tmp_path / "r", host=os.uname().nodename, pid=os.getppid(), proc_start="1")
    with caplog.at_level(logging.INFO, logger="llmtrain"):
        RunLock(tmp_path / "r").acquire()
    assert "is another process now (its pid was reused)" in caplog.text


def test_another_host_is_trusted_until_its_heartbeat_stops(tmp_path, caplog):
    path = _write_lock(tmp_path / "r", host="node-7", pid=4242)
    with pytest.raises(CheckpointError, match="pid 4242 on node-7"):
        RunLock(tmp_path / "r").acquire()
    old = time.time() - STALE_AFTER_S - 5
    os.utime(path, (old, old))
    with caplog.at_level(logging.INFO, logger="llmtrain"):
        RunLock(tmp_path / "r").acquire()
    assert "its heartbeat stopped" in caplog.text


def test_the_same_slurm_job_takes_over_its_own_lock(tmp_path, monkeypatch):
    _write_lock(tmp_path / "r", host="node-7", pid=4242, slurm_job="991")
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    RunLock(tmp_path / "r").acquire()
    assert json.loads((tmp_path / "r" / LOCK_FILE).read_text())["slurm_job"] == "991"


def test_a_checkpoint_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "ckpt").write_text("not a directory")
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'ckpt'} is a file, not a directory, so the run directory "
                                              rf"{tmp_path / 'ckpt' / 'r'} cannot be created; set checkpoint.dir"):
        RunLock(tmp_path / "ckpt" / "r").acquire()
    assert (tmp_path / "ckpt").read_text() == "not a directory"
