"""In-training evaluation: every ``train.eval_every`` steps and once at the end."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from llmtrain.training.callbacks.base import Callback, LoopState
from llmtrain.training.metrics import MetricsLogger

Evaluate = Callable[[nn.Module], dict[str, float]]


class PeriodicEvaluation(Callback):
    """Runs the objective's evaluator on every rank (ZeRO-3 forwards are collective)."""

    def __init__(self, evaluate: Evaluate | None, engine, metrics: MetricsLogger, every: int) -> None:
        self.evaluate, self.engine, self.metrics, self.every = evaluate, engine, metrics, every

    def run(self, state: LoopState) -> dict[str, float]:
        if self.evaluate is None:
            return {}
        self.engine.eval()
        with torch.no_grad():
            metrics = self.evaluate(self.engine.loss_module)
        self.engine.train()
        if metrics:
            text = " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            self.metrics.log({"kind": "validation", "step": state.step, **metrics},
                             console=f"eval step {state.step} | {text}")
        return metrics

    def on_step_end(self, state, outcome) -> None:
        if self.every and state.step % self.every == 0 and state.step < state.max_steps:
            self.run(state)

    def on_fit_end(self, state: LoopState) -> None:
        self.run(state)
