"""Crashes: kill -9 of one rank, or of everything in the middle of writing a checkpoint, then relaunch.

The relaunch must resume from the last *complete* checkpoint (the one `latest` names) and give the
per-step losses of an uninterrupted run, bit for bit (CPU, fp32, 2 ranks).
"""

from __future__ import annotations

import time

from clitools import cli_env, losses_by_step, tiny_train_args, torchrun
from faultkit import EVERY, Run, latest


def test_killed_rank_ends_the_job_quickly_and_the_relaunch_resumes_exactly(tiny_data, tmp_path, reference_losses):
    args = tiny_train_args(tiny_data, tmp_path, *EVERY, "train.collective_timeout_s=20")
    started = time.monotonic()
    # rank 1 SIGKILLs itself right after step 5: its checkpoint at step 4 is complete, step 6 never comes
    crashed = torchrun(2, args, check=False, env=cli_env(LLMTRAIN_FAULT="kill_at_step=5,rank=1"))
    elapsed = time.monotonic() - started
    assert crashed.returncode != 0
    assert "exitcode  : -9" in crashed.stderr and "SIGKILL" in crashed.stderr
    assert elapsed < 60, f"the surviving rank took {elapsed:.0f} s to exit"
    run_dir = tmp_path / "t"
    assert latest(run_dir) == "step_000004" and not (run_dir / "step_000006").exists()

    again = torchrun(2, args)
    assert f"resumed from {run_dir / 'step_000004'} at step 4" in again.stdout
    assert losses_by_step(run_dir) == reference_losses  # steps 5-8 recomputed, bit-identical


def test_kill_all_while_a_checkpoint_is_half_written(tiny_data, tmp_path, reference_losses):
    args = tiny_train_args(tiny_data, tmp_path, *EVERY)
    run_dir = tmp_path / "t"
    step4 = run_dir / "step_000004"
    # every rank blocks in the save of step 4 after DeepSpeed's states, before trainer_state.json
    run = Run(args, tmp_path / "logs", nproc=2, fault="stall_in_save_at_step=4")
    run.wait_for("a half-written step_000004", lambda: (step4 / "mp_rank_00_model_states.pt").is_file())
    run.kill_all()  # launcher and both workers at once, like a node that loses power
    assert latest(run_dir) == "step_000002"
    assert not (step4 / "trainer_state.json").exists()

    again = torchrun(2, args)
    assert f"resumed from {run_dir / 'step_000002'} at step 2" in again.stdout
    assert losses_by_step(run_dir) == reference_losses
    assert latest(run_dir) == "step_000008"
    assert all((d / "trainer_state.json").is_file() for d in run_dir.glob("step_*"))  # the half-written one was replaced

