"""Per-rank timing: the record's fields from every rank's clocks, and the hooks' bookkeeping."""

import time

import pytest
import torch

from llmtrain.training.callbacks.base import LoopState, StepOutcome
from llmtrain.training.callbacks.rank_timing import FIELDS, RankTiming, ranks_record


def test_record_names_the_slowest_rank_and_the_straggler_ratio():
    ranks = [[1.0, 0.5, 0.01, 2.0, 0.0, 1.5], [1.1, 0.9, 0.30, 2.5, 4.0, 1.7], [1.0, 0.6, 0.02, 2.0, 0.0, 1.4]]
    rec = ranks_record(20, ranks)
    assert rec["kind"] == "ranks" and rec["step"] == 20 and rec["ranks"] == 3
    assert (rec["step_time_s_min"], rec["step_time_s_median"], rec["step_time_s_max"], rec["slowest_rank"]) == \
        (1.0, 1.0, 1.1, 1)
    assert (rec["busy_s_min"], rec["busy_s_max"], rec["busy_slowest_rank"]) == (0.5, 0.9, 1)
    assert rec["straggler_ratio"] == pytest.approx(1.8)
    assert (rec["data_wait_s_max"], rec["eval_s_max"], rec["checkpoint_s_max"], rec["peak_memory_gib_max"]) == \
        (0.3, 2.5, 4.0, 1.7)
    assert rec["busy_s_per_rank"] == [0.5, 0.9, 0.6] and len(FIELDS) == 6
    assert "busy_s_per_rank" not in ranks_record(1, ranks * 30)  # 90 ranks: no per-rank lists


class _Metrics:
    def __init__(self):
        self.records = []

    def log(self, rec, console=None):
        self.records.append(rec)


class _Loader:
    data_wait_s = 0.0


def test_hooks_measure_busy_wait_eval_and_checkpoint_time():
    metrics, loader = _Metrics(), _Loader()
    cb = RankTiming(metrics, log_every=2, device=torch.device("cpu"), loader=loader)
    marker = cb.after_evaluation()
    state = LoopState(step=0, max_steps=10, first_step=0, world_size=1, rank=0)
    cb.on_train_start(state)
    for step in (1, 2):
        loader.data_wait_s += 0.01
        time.sleep(0.02)  # data, forward, backward
        cb.wants_stop(state)
        state.step = step
        cb.on_step_end(state, StepOutcome(loss=1.0, lr=1e-3, grad_norm=1.0, skipped=False, spike=False,
                                          step_time_s=0.03, tokens=10))
        time.sleep(0.03 if step == 2 else 0.0)  # evaluation at step 2
        marker.on_step_end(state, None)
        time.sleep(0.04 if step == 2 else 0.0)  # a checkpoint at step 2
        cb.on_after_step(state)
    assert len(metrics.records) == 1
    rec = metrics.records[0]
    assert rec["step"] == 2 and rec["step_time_s_max"] == pytest.approx(0.03)
    assert 0.02 <= rec["busy_s_max"] < 0.035
    assert rec["data_wait_s_max"] == pytest.approx(0.01)
    assert 0.03 <= rec["eval_s_max"] < 0.045 and 0.04 <= rec["checkpoint_s_max"] < 0.055
    assert rec["peak_memory_gib_max"] > 0
