"""A full disk or an unwritable checkpoint path at checkpoint time: a clear error, nothing lost.

The full disk is real: the run directory lives on a small tmpfs (mounting needs root; the test is
skipped where it cannot mount) filled up after the first checkpoint. Either way the previous
checkpoint and `latest` stay as they were, and a relaunch resumes from them once space is back.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from clitools import run_cli, tiny_train_args
from faultkit import latest


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the full-disk case needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_full_disk_at_checkpoint_time_keeps_the_previous_checkpoint(tiny_data, small_disk):
    args = tiny_train_args(tiny_data, small_disk, "checkpoint.every=2", "train.zero_stage=1")
    run_cli([*args, "--set", "train.exit_after_steps=2"])
    run_dir = small_disk / "t"
    assert latest(run_dir) == "step_000002"
    one_checkpoint = _du(run_dir / "step_000002")
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leave room for half a checkpoint
        f.write(b"\0" * (shutil.disk_usage(small_disk).free - one_checkpoint // 2))

    proc = run_cli(args, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"llmtrain train: error: writing checkpoint {run_dir / 'step_000004'} failed on rank 0:" in proc.stderr
    assert "MiB free on that file system" in proc.stderr
    assert f"The previous checkpoint ({run_dir / 'step_000002'}) and `latest` are unchanged" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert latest(run_dir) == "step_000002" and (run_dir / "step_000002" / "trainer_state.json").is_file()

    filler.unlink()
    again = run_cli(args)
    assert f"resumed from {run_dir / 'step_000002'} at step 2" in again.stdout
    assert latest(run_dir) == "step_000008"


def test_unwritable_checkpoint_path_is_a_clear_error(tiny_data, tmp_path):
    """As root a read-only mode does not stop writes, so the next step directory is made a file."""
    args = tiny_train_args(tiny_data, tmp_path, "checkpoint.every=2", "train.max_steps=4", "train.zero_stage=1")
    run_cli([*args, "--set", "train.exit_after_steps=2"])
    run_dir = tmp_path / "t"
    (run_dir / "step_000004").write_text("in the way")
    proc = run_cli(args, check=False)
    assert proc.returncode == 2
    assert f"llmtrain train: error: cannot write checkpoints to {run_dir}: [Errno 20] Not a directory" in proc.stderr
    assert "earlier checkpoints are untouched" in proc.stderr
    assert latest(run_dir) == "step_000002" and (run_dir / "step_000002" / "trainer_state.json").is_file()
