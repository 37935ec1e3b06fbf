"""The one training loop, for pretraining and every fine-tuning objective.

A :class:`TrainingTask` says *what* is trained (module, loss, batches, evaluation); the
:class:`Trainer` says *how*: DeepSpeed engine from the generated config, gradient accumulation,
non-finite and spike guards, metrics, checkpoints, exact resume and preemption.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from llmtrain.config.base import to_dict
from llmtrain.config.loader import dump_yaml
from llmtrain.config.schema import ModelConfig, RunConfig
from llmtrain.distributed.ds_config import build_ds_config
from llmtrain.distributed.env import DistEnv
from llmtrain.errors import CheckpointError, UserError
from llmtrain.fsutil import atomic_write_text
from llmtrain.training import checkpoint as ckpt
from llmtrain.training.faults import FaultPlan
from llmtrain.training.metrics import MetricsLogger, StepTimer, memory_gib, peak_tflops, plot_losses
from llmtrain.training.optim import GuardedAdamW, build_optimizer, build_scheduler
from llmtrain.training.runtime import run_dir_of
from llmtrain.training.signals import EXIT_PREEMPTED, PreemptionFlag

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, int]]


class BatchSource(Protocol):
    micro_steps_per_step: int

    def next_batch(self) -> Batch: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainingDiverged(UserError):
    """Too many consecutive steps with a non-finite loss or gradient."""


@dataclass
class TrainingTask:
    """What to train. Pretraining and each fine-tuning objective build one of these."""

    model: nn.Module
    model_config: ModelConfig
    loss_fn: LossFn
    train_loader: BatchSource
    tokens_per_sample: int
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None  # called on every rank
    # (model, full state dict) -> the weights to save, e.g. with LoRA adapters merged
    export_state: Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    tokenizer_dir: Path | None = None
    extra_state: dict[str, Any] = field(default_factory=dict)  # e.g. classification labels ("head")
    extra_files: dict[str, str] = field(default_factory=dict)  # written into each checkpoint (chat template)


@dataclass
class TrainResult:
    step: int
    losses: dict[int, float]
    run_dir: Path
    last_checkpoint: Path | None
    exit_code: int = 0


class LossModule(nn.Module):
    """What DeepSpeed wraps: forward(batch) -> (mean loss, tokens). Keeps the model DeepSpeed-free."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Batch) -> tuple[torch.Tensor, int]:
        return self.loss_fn(self.model, batch)


def batch_checksum(input_ids: torch.Tensor) -> int:
    """Order-independent fingerprint of the samples in a batch (sum over rows of a per-row hash),
    so runs on different data-parallel sizes can show they consumed the same global batch."""
    ids = input_ids.detach().to("cpu", torch.int64)
    weights = torch.arange(1, ids.shape[-1] + 1, dtype=torch.int64)
    return int(((ids * weights).sum(-1) % 1_000_003).sum())


def _all_reduce_mean(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return float(t.item())


def _is_collective_failure(e: RuntimeError) -> bool:
    """Gloo/NCCL report a dead or hung peer as a bare RuntimeError (or DistError) naming the backend."""
    text = str(e)
    return isinstance(e, dist.DistError) or any(
        w in text for w in ("gloo", "NCCL", "Connection reset by peer", "Connection closed by peer", "Timed out waiting"))


class Trainer:
    def __init__(self, cfg: RunConfig, task: TrainingTask, env: DistEnv, device: torch.device) -> None:
        self.cfg, self.task, self.env, self.device = cfg, task, env, device
        self.run_dir = run_dir_of(cfg)
        self.is_rank0 = env.rank == 0
        self.losses: dict[int, float] = {}
        self.step = 0
        self.consumed_tokens = 0
        self.skipped_steps = 0
        self.data_checksum = 0
        self.faults = FaultPlan.from_env(env.rank)  # test-only hooks; no-op unless LLMTRAIN_FAULT is set
        self.resume_dir = self._resume_dir()
        saved = ckpt.read_state(self.resume_dir) if self.resume_dir else None
        self._check_resume_compatible(saved)
        self.ds_config = build_ds_config(cfg, env.world_size, on_gpu=device.type == "cuda")
        universal = bool(saved) and cfg.train.zero_stage > 0 and (
            saved["dp_size"] != env.world_size or saved["zero_stage"] != cfg.train.zero_stage)
        if universal:
            self.ds_config["checkpoint"]["load_universal"] = True
        self.engine, self.optimizer = self._build_engine()
        if self.resume_dir is not None:
            self._load(self.resume_dir, saved, universal)
        self.logger = MetricsLogger(self.run_dir, enabled=self.is_rank0, jsonl=cfg.logging.jsonl,
                                    tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                                    run_name=cfg.train.run_name, config=to_dict(cfg))

    # ---- set-up -------------------------------------------------------------------------------
    def _resume_dir(self) -> Path | None:
        mode = self.cfg.checkpoint.resume
        if mode in ("never", "auto") and not (self.run_dir / ckpt.LATEST).exists():
            ckpt.refuse_uncommitted(self.run_dir)
        if mode == "never":
            if (self.run_dir / ckpt.LATEST).exists():
                raise CheckpointError(
                    f"{self.run_dir} already holds checkpoints and checkpoint.resume=never would overwrite them; "
                    f"use --resume auto to continue, another train.run_name, or delete the directory yourself")
            return None
        if mode == "auto":
            return ckpt.read_latest(self.run_dir)
        return ckpt.resolve_checkpoint(mode)

    def _check_resume_compatible(self, saved: dict | None) -> None:
        if saved is None:
            return
        diff = ckpt.model_config_diff(ckpt.read_model_config(self.resume_dir), self.task.model_config)  # type: ignore[arg-type]
        if diff:
            raise CheckpointError(
                f"cannot resume from {self.resume_dir}: the model config differs ({'; '.join(diff)}). "
                f"Resume with the original model settings, or start a new run (another train.run_name).")
        fp_saved, fp_now = saved.get("tokenizer_fingerprint"), self.task.extra_state.get("tokenizer_fingerprint")
        if fp_saved and fp_now and fp_saved != fp_now:
            raise CheckpointError(
                f"cannot resume from {self.resume_dir}: it was trained with tokenizer {fp_saved[:12]}, the data now "
                f"uses {fp_now[:12]}. Re-prepare the data with the original tokenizer or start a new run.")

    def _build_engine(self):
        import deepspeed

        torch.manual_seed(self.cfg.train.seed)
        module = LossModule(self.task.model, self.task.loss_fn)
        client_opt = None if "optimizer" in self.cfg.deepspeed else build_optimizer(module, self.cfg.optim)
        max_steps = self.cfg.train.max_steps
        engine, optimizer, _, _ = deepspeed.initialize(
            model=module, optimizer=client_opt, config=self.ds_config,
            model_parameters=[p for p in module.parameters() if p.requires_grad] if client_opt is None else None,
            lr_scheduler=lambda opt: build_scheduler(opt, self.cfg.optim, max_steps))
        return engine, client_opt

    def _load(self, step_dir: Path, saved: dict, universal: bool) -> None:
        run_dir, tag = step_dir.parent, step_dir.name
        if universal:
            if self.is_rank0:
                ckpt.make_universal(step_dir)
            if dist.is_initialized():
                dist.barrier()
            tag = f"{step_dir.name}_universal"
        try:
            path, _ = self.engine.load_checkpoint(str(run_dir), tag=tag, load_optimizer_states=True,
                                                  load_lr_scheduler_states=True)
            if not universal:
                ckpt.load_rng(step_dir, self.env.rank)
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError) as e:
            raise ckpt.damaged(step_dir, e) from e
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load {run_dir / tag}; the checkpoint is incomplete or damaged")
        self.step = saved["step"]
        self.consumed_tokens = saved["consumed_tokens"]
        self.skipped_steps = saved.get("skipped_steps", 0)
        self.task.train_loader.load_state_dict(saved["loader"])
        if self.is_rank0:
            print(f"[llmtrain] resumed from {step_dir} at step {self.step} "
                  f"({saved['dp_size']} -> {self.env.world_size} data-parallel ranks)", flush=True)

    # ---- the loop -------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg, t = self.cfg, self.cfg.train
        if self.resume_dir is not None and self.step >= t.max_steps:
            # Re-saving would rewrite the step directory `latest` names; a crash then could lose it.
            if self.is_rank0:
                print(f"[llmtrain] {self.resume_dir} is already at step {self.step} >= train.max_steps "
                      f"{t.max_steps}: nothing to do (raise train.max_steps to continue)", flush=True)
            self.logger.close()
            return TrainResult(self.step, self.losses, self.run_dir, self.resume_dir)
        preempt = PreemptionFlag().install()
        last_ckpt = self.resume_dir
        recent: deque[float] = deque(maxlen=100)
        nonfinite_run = 0
        gas = self.engine.gradient_accumulation_steps()
        samples_per_step = t.global_batch_size
        peak = peak_tflops(self.device, cfg.logging.peak_tflops)
        from llmtrain.model.flops import flops_per_token

        flops_tok = flops_per_token(self.task.model_config, self.task.tokens_per_sample)
        timer = StepTimer()
        started, first_step = time.monotonic(), self.step
        try:
            while self.step < t.max_steps:
                if self._any_rank(preempt.requested):
                    last_ckpt = self.save()
                    if self.is_rank0:
                        print(f"[llmtrain] {preempt.name or 'signal'} received: checkpoint {last_ckpt} written, "
                              f"exiting with code {EXIT_PREEMPTED} so the job can be requeued", flush=True)
                    return TrainResult(self.step, self.losses, self.run_dir, last_ckpt, EXIT_PREEMPTED)
                self.engine.train()
                loss_sum, tokens, checksum = 0.0, 0, 0
                for micro in range(gas):
                    host_batch = self.task.train_loader.next_batch()
                    checksum += batch_checksum(host_batch["input_ids"])  # on the host: no device sync
                    batch = {k: v.to(self.device, non_blocking=True) for k, v in host_batch.items()}
                    loss, n = self.engine(batch)
                    loss = self.faults.on_loss(loss, self.step + 1)
                    self.engine.backward(loss)
                    loss_sum += float(loss.detach())
                    tokens += int(n)
                    if micro == gas - 1:
                        step_loss = _all_reduce_mean(loss_sum / gas, self.device)
                        spike = self._is_spike(step_loss, recent)
                        if isinstance(self.optimizer, GuardedAdamW):
                            self.optimizer.begin_step(skip=spike and t.skip_spikes)
                        grad_norm = self._grad_norm_stage0()
                        skipped_before = self.engine.skipped_steps
                        lr = self.engine.get_lr()[0]
                    self.engine.step()
                guard_skipped = self.optimizer.end_step() if isinstance(self.optimizer, GuardedAdamW) else False
                skipped = self.engine.skipped_steps > skipped_before or guard_skipped
                self.step += 1
                self.consumed_tokens += int(_all_reduce_mean(tokens, self.device) * self.env.world_size)
                self.data_checksum = round(_all_reduce_mean(checksum, self.device) * self.env.world_size)
                finite = math.isfinite(step_loss)
                nonfinite_run = nonfinite_run + 1 if (not finite or (skipped and not spike)) else 0
                self.skipped_steps += int(skipped)
                if finite:
                    recent.append(step_loss)
                    self.losses[self.step] = step_loss
                if nonfinite_run >= t.max_consecutive_nonfinite:
                    raise TrainingDiverged(
                        f"{nonfinite_run} consecutive steps (up to step {self.step}) had a non-finite loss or gradient; "
                        f"training stopped. The last good checkpoint is {last_ckpt or 'none (no checkpoint was written yet)'}. "
                        f"Lower optim.lr, raise optim.warmup_steps, use train.precision=bf16/fp32, or check the data.")
                gn = self.engine.get_global_grad_norm() if grad_norm is None else grad_norm
                elapsed = timer.lap()
                self._log_step(step_loss, lr, gn, elapsed, samples_per_step, flops_tok, peak, skipped, spike)
                if t.eval_every and self.step % t.eval_every == 0 and self.step < t.max_steps:
                    self.run_eval()
                # no periodic save inside a run of non-finite steps: it would rotate out the last good checkpoint
                if (cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0 and self.step < t.max_steps
                        and nonfinite_run == 0):
                    last_ckpt = self.save()
                if self._should_exit_early(first_step, started):
                    last_ckpt = self.save()
                    if self.is_rank0:
                        print(f"[llmtrain] stopping at step {self.step} as asked (train.exit_after_*); "
                              f"resume with the same command", flush=True)
                    return TrainResult(self.step, self.losses, self.run_dir, last_ckpt)
                self.faults.after_step(self.step)
                timer.lap()  # exclude evaluation and checkpoint time from the next step
            self.run_eval()
            last_ckpt = self.save()
            if self.is_rank0 and cfg.logging.plot and cfg.logging.jsonl:
                plot_losses(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")
            return TrainResult(self.step, self.losses, self.run_dir, last_ckpt)
        except RuntimeError as e:
            if not _is_collective_failure(e):
                raise
            raise UserError(
                f"rank {self.env.rank}: a collective operation failed at step {self.step + 1} "
                f"({str(e).splitlines()[0][:300]}). Another rank died or hangs; collectives give up after "
                f"train.collective_timeout_s={t.collective_timeout_s} s. The last complete checkpoint is "
                f"{last_ckpt or 'none'}; fix the failing rank (see its log) and relaunch the same command to "
                f"resume.") from e
        finally:
            preempt.uninstall()
            self.logger.close()

    def _should_exit_early(self, first_step: int, started: float) -> bool:
        t = self.cfg.train
        if self.step >= t.max_steps:
            return False
        by_steps = bool(t.exit_after_steps) and self.step - first_step >= t.exit_after_steps
        by_time = bool(t.exit_after_minutes) and (time.monotonic() - started) / 60 >= t.exit_after_minutes
        return self._any_rank(by_steps or by_time)

    def _any_rank(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        if dist.is_initialized():
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _is_spike(self, loss: float, recent: deque[float]) -> bool:
        z = self.cfg.train.spike_zscore
        if not z or len(recent) < 10 or not math.isfinite(loss):
            return False
        mean, std = statistics.fmean(recent), statistics.pstdev(recent)
        if std > 0 and (loss - mean) / std > z:
            if self.is_rank0:
                print(f"[llmtrain] loss spike at step {self.step + 1}: {loss:.4f} vs mean {mean:.4f} "
                      f"(z={(loss - mean) / std:.1f}){'; step skipped' if self.cfg.train.skip_spikes else ''}", flush=True)
            return True
        return False

    def _grad_norm_stage0(self) -> float | None:
        """Stage 0 in fp32 has no ZeRO optimizer to report the norm; compute it before the step."""
        if self.cfg.train.zero_stage != 0 or self.cfg.train.precision != "fp32":
            return None
        grads = [p.grad.detach().float().norm() for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.stack(grads).norm()) if grads else 0.0

    def _log_step(self, loss: float, lr: float, grad_norm: float | None, elapsed: float, samples: int, flops_tok: float,
                  peak: float | None, skipped: bool, spike: bool) -> None:
        every = self.cfg.logging.log_every
        if self.step % every and self.step != self.cfg.train.max_steps and not skipped and not spike:
            return
        tokens = samples * self.task.tokens_per_sample
        tps = tokens / max(elapsed, 1e-9)
        rec: dict[str, Any] = {
            "kind": "train", "step": self.step, "loss": loss, "lr": lr,
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            "step_time_s": elapsed, "tokens_per_s": tps, "tokens_per_s_per_device": tps / self.env.world_size,
            "consumed_tokens": self.consumed_tokens, "memory_gib": memory_gib(self.device),
            "skipped_steps": self.skipped_steps, "spike": spike, "data_checksum": self.data_checksum,
        }
        if peak:
            rec["mfu"] = flops_tok * tps / self.env.world_size / (peak * 1e12)
        line = (f"step {self.step:>6}/{self.cfg.train.max_steps} | loss {loss:.4f} | lr {rec['lr']:.2e} | "
                f"gnorm {rec['grad_norm']:.3f} | {tps:,.0f} tok/s | {elapsed * 1000:.0f} ms/step"
                + (f" | MFU {rec['mfu'] * 100:.1f}%" if "mfu" in rec else "") + f" | mem {rec['memory_gib']:.2f} GiB"
                + (" | SKIPPED" if skipped else ""))
        self.logger.log(rec, console=line)

    def run_eval(self) -> dict[str, float]:
        if self.task.evaluate is None:
            return {}
        self.engine.eval()
        with torch.no_grad():
            metrics = self.task.evaluate(self.engine)
        self.engine.train()
        if metrics:
            text = " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            self.logger.log({"kind": "validation", "step": self.step, **metrics}, console=f"eval step {self.step} | {text}")
        return metrics

    # ---- checkpoints ------------------------------------------------------------------------------
    def save(self) -> Path:
        tag = ckpt.tag_for(self.step)
        step_dir = self.run_dir / tag
        if self.is_rank0:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                if step_dir.exists() and ckpt.read_latest(self.run_dir) != step_dir:
                    shutil.rmtree(step_dir)  # leftovers of a save that crashed
            except OSError as e:
                raise CheckpointError(f"cannot write checkpoints to {self.run_dir}: {e}. Free space or choose "
                                      f"checkpoint.dir elsewhere; earlier checkpoints are untouched") from None
        self._barrier()
        try:
            self.engine.save_checkpoint(str(self.run_dir), tag=tag, save_latest=False, client_state={
                "universal_checkpoint_info": {"universal_checkpoint_version": 0.4}})
            self.faults.during_save(self.step)
            weights = self._consolidated_state()
            if self.is_rank0:
                self._write_metadata(step_dir, weights)
            ckpt.save_rng(step_dir, self.env.rank)
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
            if isinstance(e, RuntimeError) and _is_collective_failure(e):
                raise
            prev = ckpt.read_latest(self.run_dir) if (self.run_dir / ckpt.LATEST).exists() else None
            free = shutil.disk_usage(self.run_dir).free / 2**20
            raise CheckpointError(
                f"writing checkpoint {step_dir} failed on rank {self.env.rank}: {str(e).splitlines()[0][:200]} "
                f"({free:.1f} MiB free on that file system{': the disk is full' if free < 1 else ''}). The previous checkpoint ({prev or 'none'}) and "
                f"`latest` are unchanged; free disk space (or point checkpoint.dir elsewhere) and relaunch to "
                f"resume from it.") from None
        self._barrier()
        if self.is_rank0:
            atomic_write_text(self.run_dir / ckpt.LATEST, tag)
            ckpt.rotate(self.run_dir, self.cfg.checkpoint.keep_last)
        self._barrier()
        return step_dir

    def _consolidated_state(self) -> dict[str, torch.Tensor] | None:
        inner = self.engine.module.model
        if self.cfg.train.zero_stage == 3:
            full = self.engine._zero3_consolidated_16bit_state_dict()  # collective: every rank calls it
            if not self.is_rank0:
                return None
            state = {k.removeprefix("model."): v for k, v in full.items()}
        else:
            if not self.is_rank0:
                return None
            state = inner.state_dict()
        if self.task.export_state is not None:
            state = self.task.export_state(inner, state)
        return state

    def _write_metadata(self, step_dir: Path, weights: dict[str, torch.Tensor] | None) -> None:
        assert weights is not None
        ckpt.save_weights(weights, self.task.model_config, step_dir, head=self.task.extra_state.get("head"))
        (step_dir / "config.yaml").write_text(dump_yaml(self.cfg))
        (step_dir / "ds_config.json").write_text(json.dumps(self.ds_config, indent=2, default=str))
        for name, text in self.task.extra_files.items():
            (step_dir / name).write_text(text)
        if self.task.tokenizer_dir is not None:
            shutil.copytree(self.task.tokenizer_dir, step_dir / "tokenizer", dirs_exist_ok=True)
        state = {
            "step": self.step, "consumed_samples": self.step * self.cfg.train.global_batch_size,
            "consumed_tokens": self.consumed_tokens, "skipped_steps": self.skipped_steps,
            "loader": self.task.train_loader.state_dict(), "dp_size": self.env.world_size,
            "zero_stage": self.cfg.train.zero_stage, "precision": self.cfg.train.precision,
            "last_loss": self.losses.get(self.step),
            **{k: v for k, v in self.task.extra_state.items() if k != "head"},
        }
        atomic_write_text(step_dir / ckpt.STATE, json.dumps(state, indent=2))

    def _barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()
