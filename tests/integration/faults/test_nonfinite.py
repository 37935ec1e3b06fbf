"""Non-finite losses and gradients, and loss spikes (injected at exact steps by LLMTRAIN_FAULT).

A non-finite step is skipped (weights and Adam moments untouched) and counted; after
train.max_consecutive_nonfinite in a row the run stops with a clear error, and the checkpoint from
before the divergence is kept (no periodic save happens inside a non-finite run). The spike
detector compares each loss with the mean/std of the recent ones (train.spike_zscore) and, with
train.skip_spikes, skips that update.
"""

from __future__ import annotations

import json
import math

from clitools import cli_env, read_train_metrics, run_cli, tiny_train_args, torchrun
from faultkit import latest
from safetensors.torch import load_file


def test_nan_loss_is_skipped_then_stops_with_the_good_checkpoint_kept(tiny_data, tmp_path):
    args = tiny_train_args(tiny_data, tmp_path, "checkpoint.every=2", "train.max_consecutive_nonfinite=3")
    proc = torchrun(2, args, check=False, env=cli_env(LLMTRAIN_FAULT="nan_loss_steps=5-"))
    run_dir = tmp_path / "t"
    assert proc.returncode != 0
    assert ("error: 3 consecutive steps (up to step 7) had a non-finite loss or gradient; training stopped. "
            f"The last good checkpoint is {run_dir / 'step_000004'}") in proc.stderr
    assert latest(run_dir) == "step_000004" and not (run_dir / "step_000006").exists()
    weights = load_file(str(run_dir / "step_000004" / "model.safetensors"))
    assert all(bool(t.isfinite().all()) for t in weights.values())
    rows = {r["step"]: r for r in read_train_metrics(run_dir)}
    assert [rows[s]["skipped_steps"] for s in (4, 5, 6)] == [0, 1, 2]
    assert math.isnan(rows[5]["loss"]) and "SKIPPED" in proc.stdout


def test_nan_gradients_with_a_finite_loss_are_skipped_and_training_goes_on(tiny_data, tmp_path):
    args = tiny_train_args(tiny_data, tmp_path, "train.max_consecutive_nonfinite=3", "train.zero_stage=1")
    run_cli(args, env=cli_env(LLMTRAIN_FAULT="nan_grad_steps=3-4"))
    run_dir = tmp_path / "t"
    rows = {r["step"]: r for r in read_train_metrics(run_dir)}
    assert [rows[s]["skipped_steps"] for s in range(1, 9)] == [0, 0, 1, 2, 2, 2, 2, 2]
    assert all(math.isfinite(rows[s]["loss"]) for s in rows)
    assert json.loads((run_dir / "step_000008" / "trainer_state.json").read_text())["skipped_steps"] == 2


def test_loss_spike_is_logged_and_optionally_skipped(tiny_data, tmp_path):
    common = ("train.max_steps=13", "train.spike_zscore=4", "logging.log_every=20")
    fault = cli_env(LLMTRAIN_FAULT="spike_steps=12")  # loss x20 at step 12; 11 normal steps before it
    logged = run_cli(tiny_train_args(tiny_data, tmp_path / "log", *common), env=fault)
    skipped = run_cli(tiny_train_args(tiny_data, tmp_path / "skip", *common, "train.skip_spikes=true"), env=fault)
    assert "loss spike at step 12:" in logged.stdout and "step skipped" not in logged.stdout
    assert "loss spike at step 12:" in skipped.stdout and "; step skipped" in skipped.stdout
    for run, n_skipped in ((tmp_path / "log", 0), (tmp_path / "skip", 1)):
        rows = {r["step"]: r for r in read_train_metrics(run / "t")}
        assert rows[12]["spike"] is True and rows[12]["skipped_steps"] == n_skipped
        assert rows[13]["spike"] is False
    # the skipped update changed the weights that step 13 sees; the logged one did not skip
    assert read_train_metrics(tmp_path / "log" / "t")[-1]["loss"] != read_train_metrics(tmp_path / "skip" / "t")[-1]["loss"]
