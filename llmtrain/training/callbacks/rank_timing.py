"""Per-rank timing: what rank 0's wall clock hides (stragglers, data stalls, slow saves).

Every rank keeps its own clocks between logging steps; at each logging step one gather
(:func:`llmtrain.distributed.collectives.all_gather_object`) brings them to rank 0, which writes a
``"kind": "ranks"`` record to metrics.jsonl (and TensorBoard / W&B):

- ``step_time_s_{min,median,max}`` and ``slowest_rank``: mean wall time per optimizer step of each
  rank since the last record (the same on all ranks up to the step's collective, so the spread is
  small; ``busy`` is where a straggler shows);
- ``busy_s_{min,max}``, ``busy_slowest_rank``, ``straggler_ratio`` (max / min): mean time from the
  start of a step to the moment the rank reaches the step's all-reduce (data, forward, backward):
  the work a rank does on its own before it waits for the others;
- ``data_wait_s_max``: mean time per step the loop waited for the loader (worst rank);
- ``eval_s_max`` / ``checkpoint_s_max``: seconds spent in evaluation and in checkpoint saves since
  the last record (worst rank);
- ``peak_memory_gib_max`` and, up to 64 ranks, per-rank lists (``*_per_rank``).

Evaluation and saves sit between :meth:`on_step_end` (placed right before the evaluation callback)
and :meth:`on_after_step`; :meth:`after_evaluation` returns the marker callback that goes right
after the evaluation callback to split the two. The final evaluation and save after the last step
(``on_fit_end``) are not in any record.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from llmtrain.distributed import collectives
from llmtrain.training.callbacks.base import Callback, LoopState, StepOutcome
from llmtrain.training.metrics import MetricsLogger, memory_gib

PER_RANK_LISTS_UP_TO = 64
FIELDS = ("step_s", "busy_s", "data_wait_s", "eval_s", "checkpoint_s", "peak_memory_gib")


class _AfterEvaluation(Callback):
    def __init__(self, owner: RankTiming) -> None:
        self.owner = owner

    def on_step_end(self, state: LoopState, outcome: StepOutcome) -> None:
        self.owner.evaluation_done()


class RankTiming(Callback):
    """Gathers each rank's step, busy, data-wait, evaluation and checkpoint times at logging steps."""

    def __init__(self, metrics: MetricsLogger, *, log_every: int, device: torch.device, loader: Any) -> None:
        self.metrics, self.log_every, self.device, self.loader = metrics, max(1, log_every), device, loader
        self._reset()
        self._step_start = self._reached_collective = self._eval_start = self._eval_end = time.perf_counter()
        self._wait_mark = self._data_wait()

    def _reset(self) -> None:
        self.steps, self.step_s, self.busy_s, self.eval_s, self.checkpoint_s = 0, 0.0, 0.0, 0.0, 0.0
        self.data_wait_s = 0.0

    def _data_wait(self) -> float:
        return float(getattr(self.loader, "data_wait_s", 0.0))

    def after_evaluation(self) -> Callback:
        """The marker to place right after the evaluation callback."""
        return _AfterEvaluation(self)

    # ---- hooks ----------------------------------------------------------------------------------
    def on_train_start(self, state: LoopState) -> None:
        self._step_start = time.perf_counter()
        self._wait_mark = self._data_wait()

    def wants_stop(self, state: LoopState) -> bool:
        self._reached_collective = time.perf_counter()  # asked right before the step's all-reduce
        return False

    def on_step_end(self, state: LoopState, outcome: StepOutcome) -> None:
        now = time.perf_counter()
        self.steps += 1
        self.step_s += outcome.step_time_s
        self.busy_s += self._reached_collective - self._step_start
        wait = self._data_wait()
        self.data_wait_s += wait - self._wait_mark
        self._wait_mark = wait
        self._eval_start = self._eval_end = now

    def evaluation_done(self) -> None:
        self._eval_end = time.perf_counter()
        self.eval_s += self._eval_end - self._eval_start

    def on_after_step(self, state: LoopState) -> None:
        now = time.perf_counter()
        self.checkpoint_s += now - self._eval_end  # a save, when one was due (else ~0)
        if state.step % self.log_every == 0 or state.step == state.max_steps:
            self._log(state)
        self._step_start = time.perf_counter()
        self._wait_mark = self._data_wait()

    # ---- the record -----------------------------------------------------------------------------
    def _log(self, state: LoopState) -> None:
        n = max(1, self.steps)
        mine = [self.step_s / n, self.busy_s / n, self.data_wait_s / n, self.eval_s, self.checkpoint_s,
                memory_gib(self.device)]
        ranks = collectives.all_gather_object(mine)  # every rank calls this at the same logging step
        self._reset()
        self.metrics.log(ranks_record(state.step, ranks))


def ranks_record(step: int, ranks: list[list[float]]) -> dict[str, Any]:
    """The metrics record of one logging step from every rank's ``FIELDS`` values (in rank order)."""
    col = {f: [float(r[i]) for r in ranks] for i, f in enumerate(FIELDS)}
    step_s, busy = col["step_s"], col["busy_s"]
    rec: dict[str, Any] = {
        "kind": "ranks", "step": step, "ranks": len(ranks),
        "step_time_s_min": min(step_s), "step_time_s_median": statistics.median(step_s),
        "step_time_s_max": max(step_s), "slowest_rank": step_s.index(max(step_s)),
        "busy_s_min": min(busy), "busy_s_max": max(busy), "busy_slowest_rank": busy.index(max(busy)),
        "straggler_ratio": max(busy) / min(busy) if min(busy) > 0 else float("inf"),
        "data_wait_s_max": max(col["data_wait_s"]), "eval_s_max": max(col["eval_s"]),
        "checkpoint_s_max": max(col["checkpoint_s"]), "peak_memory_gib_max": max(col["peak_memory_gib"]),
    }
    if len(ranks) <= PER_RANK_LISTS_UP_TO:
        rec.update({f"{f}_per_rank": col[f] for f in FIELDS})
    return rec
