"""Preemption: SIGTERM / SIGUSR1 checkpoint at the next step boundary and exit with EXIT_PREEMPTED.

Under torchrun the signal goes to the launcher (as Slurm's scancel or a preemption would), which
forwards it to the workers and gives them 30 s before SIGKILL; the workers checkpoint, exit 75, and
torchrun reports them. A relaunch gives the losses of an uninterrupted run. A second signal during
the save only sets the same flag again, so the checkpoint is still written whole.
"""

from __future__ import annotations

import json
import signal

import pytest
from clitools import losses_by_step, tiny_train_args, torchrun
from faultkit import Run, latest, logged_steps

from llmtrain.training.signals import EXIT_PREEMPTED


def test_sigterm_to_torchrun_checkpoints_and_the_relaunch_matches(tiny_data, tmp_path, reference_losses):
    args = tiny_train_args(tiny_data, tmp_path, "checkpoint.every=2")
    run_dir = tmp_path / "t"
    run = Run(args, tmp_path / "logs", nproc=2, fault="step_delay_s=0.4")
    run.wait_for("step 3", lambda: logged_steps(run_dir) >= 3)
    run.proc.send_signal(signal.SIGTERM)
    rc = run.finish()
    assert rc != 0 and "SignalException" in run.stderr  # torchrun re-raises the signal it forwarded
    assert "SIGTERM received: checkpoint" in run.stdout and f"exiting with code {EXIT_PREEMPTED}" in run.stdout
    stopped = int(latest(run_dir).removeprefix("step_"))
    assert 3 <= stopped < 8
    state = json.loads((run_dir / latest(run_dir) / "trainer_state.json").read_text())
    assert state["step"] == stopped and state["consumed_samples"] == 8 * stopped

    again = torchrun(2, args)
    assert f"at step {stopped}" in again.stdout
    assert losses_by_step(run_dir) == reference_losses


def test_sigusr1_then_sigterm_during_the_save(tiny_data, tmp_path, reference_losses):
    """One process: SIGUSR1 asks for the checkpoint, a SIGTERM lands while it is written."""
    args = tiny_train_args(tiny_data, tmp_path)  # no periodic checkpoints: the only save is the preemption's
    run_dir = tmp_path / "t"
    run = Run(args, tmp_path / "logs", fault="step_delay_s=0.4,save_delay_s=3")
    run.wait_for("step 2", lambda: logged_steps(run_dir) >= 2)
    run.proc.send_signal(signal.SIGUSR1)
    run.wait_for("the preemption save", lambda: any(run_dir.glob("step_*/mp_rank_00_model_states.pt")))
    run.proc.send_signal(signal.SIGTERM)  # during save_delay_s, before trainer_state.json
    assert run.finish() == EXIT_PREEMPTED
    assert "SIGUSR1 received: checkpoint" in run.stdout
    stopped = latest(run_dir)
    assert json.loads((run_dir / stopped / "trainer_state.json").read_text())["step"] == int(stopped[5:])

    again = Run(args, tmp_path / "logs2")
    assert again.finish() == 0, again.output()
    assert f"resumed from {run_dir / stopped}" in again.stdout
    got = losses_by_step(run_dir)
    # 1 rank with 4 micro-batches vs the 2-rank reference: the same samples, another reduction order
    assert got.keys() == reference_losses.keys()
    for step, loss in reference_losses.items():
        assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-5), step


def test_sigint_checkpoints_like_sigterm_and_the_relaunch_matches(tiny_data, tmp_path, reference_losses):
    """Ctrl-C: one line, a checkpoint at the next step boundary, exit 75; nothing since the last
    periodic checkpoint is lost and the relaunch continues with the same losses."""
    args = tiny_train_args(tiny_data, tmp_path)  # no periodic checkpoints
    run_dir = tmp_path / "t"
    run = Run(args, tmp_path / "logs", fault="step_delay_s=0.4")
    run.wait_for("step 3", lambda: logged_steps(run_dir) >= 3)
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == EXIT_PREEMPTED, run.output()
    stopped = latest(run_dir)
    assert f"SIGINT received: checkpoint {run_dir / stopped} written, exiting with code 75; run the same command to " \
           f"resume" in run.stdout
    assert "Traceback" not in run.stderr and "KeyboardInterrupt" not in run.stderr
    assert 3 <= int(stopped[5:]) < 8

    again = Run(args, tmp_path / "logs2")
    assert again.finish() == 0, again.output()
    assert f"resumed from {run_dir / stopped}" in again.stdout
    got = losses_by_step(run_dir)
    assert got.keys() == reference_losses.keys()
    for step, loss in reference_losses.items():
        assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-5), step


def _accelerate(port: int) -> list[str]:
    return ["accelerate", "launch", "--config_file", "launch/accelerate/cpu_2proc.yaml", "--multi_gpu",
            "--num_processes", "2", "--main_process_port", str(port)]


def _deepspeed(port: int) -> list[str]:
    return ["deepspeed", "--num_gpus", "2", "--master_port", str(port)]


@pytest.mark.parametrize("launcher", [pytest.param(_accelerate, id="accelerate"),
                                      pytest.param(_deepspeed, id="deepspeed")])
def test_sigterm_through_launch_preemptible_exits_75_and_the_relaunch_matches(launcher, tiny_data, tmp_path,
                                                                               reference_losses):
    """accelerate exits 1 and the deepspeed runner dies of SIGTERM (143) without telling its workers:
    launch/preemptible.sh turns a signal into a checkpoint on every worker and exit code 75."""
    import subprocess
    import time

    from clitools import BIN, FAULT_ENTRY, ROOT, cli_env, free_port, run_cli

    args = tiny_train_args(tiny_data, tmp_path, "checkpoint.every=2")
    run_dir = tmp_path / "t"
    env = cli_env(LLMTRAIN_FAULT="step_delay_s=0.4", ACCELERATE_USE_CPU="1")
    prefix = launcher(free_port())
    cmd = [str(ROOT / "launch" / "preemptible.sh"), str(BIN / prefix[0]), *prefix[1:], FAULT_ENTRY, *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while logged_steps(run_dir) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no step 3 within 180 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "SIGUSR1 received: checkpoint" in out and "exiting with code 75" in out
    assert "preemptible.sh: SIGTERM received" in err and "exiting with 75 so the job can be requeued" in err
    stopped = int(latest(run_dir).removeprefix("step_"))
    assert 3 <= stopped < 8

    module = ["--module", "llmtrain"] if prefix[0] == "deepspeed" else ["-m", "llmtrain"]
    again = run_cli([*launcher(free_port()), *module, *args], env=cli_env(ACCELERATE_USE_CPU="1"))
    assert f"at step {stopped}" in again.stdout
    assert losses_by_step(run_dir) == reference_losses  # the launchers reproduce torchrun's losses exactly
