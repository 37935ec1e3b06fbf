"""Per-step metrics: loss, LR, gradient norm, throughput, MFU, memory; console lines (under a progress
bar on a terminal), metrics.jsonl, TensorBoard and W&B through :class:`~llmtrain.training.metrics.MetricsLogger`.

Throughput counts the tokens the model read (padding excluded, see ``StepOutcome.input_tokens``).
With ``logging.progress_bar`` and stderr on a terminal, a tqdm bar shows every step and the periodic
lines print above it; anywhere else (a log file, Slurm output, a pipe) only the periodic lines
print, since a bar there is a stream of carriage returns.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from llmtrain.distributed.logging import is_terminal, set_console_writer
from llmtrain.training.callbacks.base import Callback, LoopState, StepOutcome
from llmtrain.training.metrics import MetricsLogger, memory_gib, plot_losses


class StepMetrics(Callback):
    def __init__(self, metrics: MetricsLogger, *, log_every: int, samples_per_step: int, tokens_per_sample: int,
                 flops_per_token: float, peak_tflops: float | None, device: torch.device, plot_to: Path | None,
                 progress_bar: bool) -> None:
        self.metrics, self.log_every, self.device = metrics, log_every, device
        self.tokens_per_step = samples_per_step * tokens_per_sample
        self.flops_per_token, self.peak = flops_per_token, peak_tflops
        self.plot_to, self.progress_bar = plot_to, progress_bar
        self._bar: Any = None
        self._finished = False

    def on_train_start(self, state: LoopState) -> None:
        if self.progress_bar and self.metrics.enabled and is_terminal(sys.stderr):
            from tqdm import tqdm

            self._bar = tqdm(total=state.max_steps, initial=state.step, desc="train", unit="step", dynamic_ncols=True,
                             file=sys.stderr)
            set_console_writer(lambda text, stream: tqdm.write(text, file=stream))

    def on_step_end(self, state: LoopState, outcome: StepOutcome) -> None:
        tps = (outcome.input_tokens or self.tokens_per_step) / max(outcome.step_time_s, 1e-9)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{outcome.loss:.4f}", lr=f"{outcome.lr:.2e}", tok_s=f"{tps:,.0f}", refresh=False)
            self._bar.update(1)
        due = state.step % self.log_every == 0 or state.step == state.max_steps
        if not (due or outcome.skipped or outcome.spike):
            return
        grad_norm = float(outcome.grad_norm) if outcome.grad_norm is not None else float("nan")
        rec: dict[str, Any] = {
            "kind": "train", "step": state.step, "loss": outcome.loss, "lr": outcome.lr, "grad_norm": grad_norm,
            "step_time_s": outcome.step_time_s, "tokens_per_s": tps, "tokens_per_s_per_device": tps / state.world_size,
            "consumed_tokens": state.consumed_tokens, "memory_gib": memory_gib(self.device),
            "skipped_steps": state.skipped_steps, "spike": outcome.spike, "data_checksum": state.data_checksum,
        }
        if self.peak:
            rec["mfu"] = self.flops_per_token * tps / state.world_size / (self.peak * 1e12)
        line = (f"step {state.step:>6}/{state.max_steps} | loss {outcome.loss:.4f} | lr {outcome.lr:.2e} | "
                f"gnorm {grad_norm:.3f} | {tps:,.0f} tok/s | {outcome.step_time_s * 1000:.0f} ms/step"
                + (f" | MFU {rec['mfu'] * 100:.1f}%" if "mfu" in rec else "") + f" | mem {rec['memory_gib']:.2f} GiB"
                + (" | SKIPPED" if outcome.skipped else ""))
        self.metrics.log(rec, console=line)

    def on_fit_end(self, state: LoopState) -> None:
        self._finished = True  # plotted on the way out, once the final evaluation is logged too

    def on_train_end(self, state: LoopState) -> None:
        if self._bar is not None:
            self._bar.close()
            set_console_writer(None)
        self.metrics.close()
        if self._finished and self.plot_to is not None and self.metrics.enabled:
            plot_losses(self.plot_to.parent / "metrics.jsonl", self.plot_to)
