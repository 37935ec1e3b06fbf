"""Step metrics: throughput and MFU from the tokens the model read (not padding); a progress bar only on a
terminal, with the periodic lines printed above it; plain periodic lines everywhere else."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from llmtrain.data.finetune_loader import collate
from llmtrain.distributed.logging import get_logger
from llmtrain.training.callbacks.base import LoopState, StepOutcome
from llmtrain.training.callbacks.step_metrics import StepMetrics
from llmtrain.training.metrics import MetricsLogger, real_tokens


def test_a_padded_batch_counts_only_its_real_tokens():
    samples = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
                                                                   "labels": [1] * 11}]
    batch = collate(samples, pad_id=0, pad_to=64)
    assert batch["input_ids"].shape == (2, 16)  # right-padded to a multiple of 8
    assert real_tokens(batch) == 14
    packed = {"input_ids": torch.ones(4, 32, dtype=torch.long)}  # pretraining rows: no mask, no padding
    assert real_tokens(packed) == 128


def _callback(tmp_path, progress_bar: bool) -> StepMetrics:
    metrics = MetricsLogger(tmp_path, enabled=True, jsonl=True, tensorboard=False, wandb=False, run_name="t", config={})
    return StepMetrics(metrics, log_every=1, samples_per_step=4, tokens_per_sample=64, flops_per_token=1e6,
                       peak_tflops=1.0, device=torch.device("cpu"), plot_to=None, progress_bar=progress_bar)


def _steps(cb: StepMetrics, n: int = 3, input_tokens: int = 100) -> list[dict]:
    import json

    state = LoopState(step=0, max_steps=n, first_step=0, world_size=2, rank=0)
    cb.on_train_start(state)
    for _ in range(n):
        state.step += 1
        cb.on_step_end(state, StepOutcome(loss=2.0, lr=1e-3, grad_norm=0.5, skipped=False, spike=False,
                                          step_time_s=0.5, tokens=40, input_tokens=input_tokens))
    cb.on_train_end(state)
    return [json.loads(x) for x in (cb.metrics.run_dir / "metrics.jsonl").read_text().splitlines()]


def test_throughput_and_mfu_use_real_tokens(tmp_path, capsys):
    records = _steps(_callback(tmp_path, progress_bar=False), input_tokens=100)
    assert [r["tokens_per_s"] for r in records] == [200.0] * 3  # 100 tokens in 0.5 s, not 4 x 64 = 256
    assert records[0]["tokens_per_s_per_device"] == 100.0
    assert records[0]["mfu"] == pytest.approx(1e6 * 100.0 / 1e12)
    assert "| 200 tok/s |" in capsys.readouterr().out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_progress_bar_on_a_terminal_with_the_lines_above_it(tmp_path, monkeypatch):
    err, out = _Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    _steps(_callback(tmp_path, progress_bar=True))
    bar = err.getvalue()
    assert "train: 100%" in bar and "3/3" in bar and "loss=2.0000" in bar and "tok_s=200" in bar
    lines = [x for x in out.getvalue().splitlines() if x.startswith("step")]
    assert len(lines) == 3 and lines[0].startswith("step      1/3 | loss 2.0000")
    get_logger("llmtrain").info("after the bar")  # the bar is closed: plain writes again
    assert out.getvalue().endswith("after the bar\n")


def test_no_bar_outside_a_terminal_only_periodic_lines(tmp_path, monkeypatch):
    err, out = _Pipe(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    _steps(_callback(tmp_path, progress_bar=True))
    assert err.getvalue() == ""  # no carriage-return stream in a log file
    assert [x[:15] for x in out.getvalue().splitlines()] == ["step      1/3 |", "step      2/3 |", "step      3/3 |"]
