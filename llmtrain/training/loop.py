"""The one training loop, for pretraining and every fine-tuning objective.

A :class:`~llmtrain.training.task.TrainingTask` says *what* is trained; the engine
(:mod:`llmtrain.engine`) owns parameters and optimizer; the checkpoint manager owns files on disk;
callbacks do everything else (guards, preemption, metrics, evaluation, early exit). What is left
here is the loop itself: micro batches, one collective per step, the optimizer step, saves.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from llmtrain.config.base import to_dict
from llmtrain.config.roots import RunConfig
from llmtrain.distributed.env import DistEnv
from llmtrain.distributed.logging import get_logger
from llmtrain.engine import build_engine
from llmtrain.errors import UserError
from llmtrain.model.flops import flops_per_token
from llmtrain.training.callbacks.base import Callback, LoopState, StepOutcome, extra_callback_factories
from llmtrain.training.callbacks.evaluation import PeriodicEvaluation
from llmtrain.training.callbacks.guards import NonFiniteGuard, SpikeGuard
from llmtrain.training.callbacks.rank_timing import RankTiming
from llmtrain.training.callbacks.step_metrics import StepMetrics
from llmtrain.training.callbacks.stopping import EarlyExit, Preemption
from llmtrain.training.checkpointing import CheckpointManager, Progress, is_collective_failure
from llmtrain.training.metrics import MetricsLogger, peak_tflops, real_tokens
from llmtrain.training.optim import build_optimizer, build_scheduler
from llmtrain.training.runtime import run_dir_of
from llmtrain.training.task import TrainingTask
from llmtrain.training.watchdog import Heartbeat, start_watchdog

log = get_logger(__name__)


@dataclass
class TrainResult:
    step: int
    losses: dict[int, float]
    run_dir: Path
    last_checkpoint: Path | None
    exit_code: int = 0


def batch_checksum(input_ids: torch.Tensor) -> int:
    """Order-independent fingerprint of the samples in a batch (sum over rows of a per-row hash),
    so runs on different data-parallel sizes can show they consumed the same global batch."""
    ids = input_ids.detach().to("cpu", torch.int64)
    weights = torch.arange(1, ids.shape[-1] + 1, dtype=torch.int64)
    return int(((ids * weights).sum(-1) % 1_000_003).sum())


class Trainer:
    def __init__(self, cfg: RunConfig, task: TrainingTask, env: DistEnv, device: torch.device) -> None:
        self.cfg, self.task, self.env, self.device = cfg, task, env, device
        self.run_dir = run_dir_of(cfg)
        self.checkpoints = CheckpointManager(self.run_dir, resume=cfg.checkpoint.resume, keep_last=cfg.checkpoint.keep_last,
                                             rank=env.rank, world_size=env.world_size)
        self.resume_point = self.checkpoints.find_resume_point(task, cfg.train.zero_stage)
        self.engine = build_engine(
            cfg, task.model, task.loss_fn, world_size=env.world_size, on_gpu=device.type == "cuda",
            reshard=bool(self.resume_point and self.resume_point.reshard),
            make_optimizer=lambda module: build_optimizer(module, cfg.optim),
            make_scheduler=lambda opt: build_scheduler(opt, cfg.optim, cfg.train.max_steps))
        progress = (self.checkpoints.restore(self.engine, self.resume_point, task) if self.resume_point
                    else Progress())
        self.state = LoopState(step=progress.step, max_steps=cfg.train.max_steps, first_step=progress.step,
                               world_size=env.world_size, rank=env.rank, consumed_tokens=progress.consumed_tokens,
                               skipped_steps=progress.skipped_steps,
                               last_checkpoint=self.resume_point.step_dir if self.resume_point else None)
        self.metrics = MetricsLogger(self.run_dir, enabled=env.rank == 0, jsonl=cfg.logging.jsonl,
                                     tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                                     run_name=cfg.train.run_name, config=to_dict(cfg))
        self.heartbeat = Heartbeat(env.rank, progress.step)  # each phase the loop enters, for the stall watchdog
        self.evaluation = PeriodicEvaluation(self.heartbeat.around("evaluation", task.evaluate), self.engine,
                                             self.metrics, cfg.train.eval_every)
        self.callbacks = self._default_callbacks() + [make(self) for make in extra_callback_factories()]

    def _default_callbacks(self) -> list[Callback]:
        t, lg = self.cfg.train, self.cfg.logging
        metrics = StepMetrics(
            self.metrics, log_every=lg.log_every, samples_per_step=t.global_batch_size,
            tokens_per_sample=self.task.tokens_per_sample,
            flops_per_token=flops_per_token(self.task.model_config, self.task.tokens_per_sample),
            peak_tflops=peak_tflops(self.device, lg.peak_tflops), device=self.device,
            plot_to=self.run_dir / "loss.png" if lg.plot and lg.jsonl else None, progress_bar=lg.progress_bar)
        timing = RankTiming(self.metrics, log_every=lg.log_every, device=self.device, loader=self.task.train_loader)
        return [SpikeGuard(t.spike_zscore, t.skip_spikes), NonFiniteGuard(t.max_consecutive_nonfinite), metrics,
                timing, self.evaluation, timing.after_evaluation(), Preemption(),
                EarlyExit(t.exit_after_steps, t.exit_after_minutes)]

    # ---- the loop -------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        s, t = self.state, self.cfg.train
        if self.resume_point is not None and s.step >= t.max_steps:
            # Re-saving would rewrite the step directory `latest` names; a crash then could lose it.
            log.info(f"[llmtrain] {self.resume_point.step_dir} is already at step {s.step} >= train.max_steps "
                     f"{t.max_steps}: nothing to do (raise train.max_steps to continue)")
            self.metrics.close()
            return self._result()
        self._each("on_train_start")
        watchdog = start_watchdog(self.env, self.heartbeat, timeout_s=t.stall_timeout_s,
                                  collective_timeout_s=t.collective_timeout_s,
                                  command="finetune" if hasattr(self.cfg, "finetune") else "train",
                                  last_checkpoint=lambda: s.last_checkpoint)
        timer = time.perf_counter()
        try:
            while s.step < t.max_steps:
                outcome, stopper = self._train_step(since=timer)
                self.heartbeat.beat("step_end", s.step)
                for cb in self.callbacks:
                    cb.on_step_end(s, outcome)
                due = self.cfg.checkpoint.every and s.step % self.cfg.checkpoint.every == 0 and s.step < t.max_steps
                if stopper is not None or (due and all(cb.allows_checkpoint(s) for cb in self.callbacks)):
                    self.save()
                if stopper is not None:
                    request = stopper.stop(s)
                    log.info(f"[llmtrain] {request.reason}")
                    return self._result(request.exit_code)
                self.heartbeat.beat("after_step", s.step)
                self._each("on_after_step")
                timer = time.perf_counter()  # evaluation and checkpoint time are not step time
            self.heartbeat.beat("fit_end", s.step)
            self._each("on_fit_end")
            self.save()
            return self._result()
        except RuntimeError as e:
            if not is_collective_failure(e):
                raise
            raise UserError(
                f"rank {self.env.rank}: a collective operation failed at step {s.step + 1} "
                f"({str(e).splitlines()[0][:300]}). Another rank died or hangs; collectives give up after "
                f"train.collective_timeout_s={t.collective_timeout_s} s. The last complete checkpoint is "
                f"{s.last_checkpoint or 'none'}; fix the failing rank (see its log) and relaunch the same command to "
                f"resume.{watchdog.diagnosis() if watchdog else ''}") from e
        finally:
            if watchdog is not None:
                watchdog.stop()
            self._each("on_train_end")

    def _train_step(self, since: float) -> tuple[StepOutcome, Callback | None]:
        """Micro batches, one all-reduce of every per-step scalar, the optimizer step."""
        s, engine, beat = self.state, self.engine, self.heartbeat.beat
        engine.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        tokens = torch.zeros((), dtype=torch.float64, device=self.device)
        checksum = input_tokens = 0
        gas = engine.micro_steps_per_step
        for _ in range(gas):
            beat("data", s.step + 1)
            host_batch = self.task.train_loader.next_batch()
            beat("forward", s.step + 1)
            checksum += batch_checksum(host_batch["input_ids"])  # on the host: no device sync
            input_tokens += real_tokens(host_batch)  # throughput counts these, not padding
            batch = {k: v.to(self.device, non_blocking=True) for k, v in host_batch.items()}
            loss, n = engine.forward(batch)
            for cb in self.callbacks:
                loss = cb.on_micro_loss(loss, s)
            beat("backward", s.step + 1)
            engine.backward(loss)
            loss_sum += loss.detach().double()
            tokens += n.to(self.device, torch.float64)
        stops = [float(cb.wants_stop(s)) for cb in self.callbacks]
        # one collective for the loss, token counts, data checksum and every rank's stop wishes
        host = torch.tensor([float(checksum), float(input_tokens), *stops], dtype=torch.float64).to(
            self.device, non_blocking=True)
        scalars = torch.cat([torch.stack([loss_sum / gas, tokens]), host])
        beat("all_reduce", s.step + 1)
        if dist.is_initialized():
            dist.all_reduce(scalars)
        totals = scalars.tolist()
        step_loss = totals[0] / self.env.world_size
        verdicts = [cb.judge_loss(step_loss, s) for cb in self.callbacks]
        beat("optimizer", s.step + 1)
        report = engine.optimizer_step(skip="skip" in verdicts)
        s.step += 1
        s.consumed_tokens += round(totals[1])
        s.data_checksum = round(totals[2])
        s.skipped_steps += int(report.skipped)
        if math.isfinite(step_loss):
            s.losses[s.step] = step_loss
        stopper = next((cb for cb, flag in zip(self.callbacks, totals[4:], strict=True) if flag > 0), None)
        outcome = StepOutcome(loss=step_loss, lr=report.lr, grad_norm=report.grad_norm, skipped=report.skipped,
                              spike=any(v is not None for v in verdicts),
                              step_time_s=time.perf_counter() - since, tokens=round(totals[1]),
                              input_tokens=round(totals[3]))
        return outcome, stopper

    def _each(self, hook: str) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self.state)

    def _result(self, exit_code: int = 0) -> TrainResult:
        s = self.state
        return TrainResult(s.step, s.losses, self.run_dir, s.last_checkpoint, exit_code)

    def run_eval(self) -> dict[str, float]:
        return self.evaluation.run(self.state)

    def save(self) -> Path:
        s, t = self.state, self.cfg.train
        self.heartbeat.beat("checkpoint", s.step)
        progress = Progress(step=s.step, consumed_tokens=s.consumed_tokens, skipped_steps=s.skipped_steps,
                            last_loss=s.losses.get(s.step))
        s.last_checkpoint = self.checkpoints.save(
            self.engine, progress, self.task, run_config=self.cfg, global_batch_size=t.global_batch_size,
            zero_stage=t.zero_stage, precision=t.precision, states_written=lambda _step: self._each("on_states_saved"))
        return s.last_checkpoint
