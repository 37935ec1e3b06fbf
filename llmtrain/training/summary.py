"""The start-up summary of `llmtrain train` and `llmtrain finetune`: what runs, on what, where.

A handful of lines on rank 0 once every input has been checked: the model and its parameter count,
the data (pretraining mixture or fine-tuning set), the batch arithmetic, precision and ZeRO, the
launcher and world size, the run directory and where the full resolved config was saved. The
complete config is in that file (and ``--print-config`` prints it); the console keeps to what a
user checks before walking away from a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from llmtrain.config.roots import FinetuneRunConfig, RunConfig
from llmtrain.distributed.env import DistEnv
from llmtrain.distributed.logging import get_logger, is_terminal
from llmtrain.training.task import TrainingTask

log = get_logger(__name__)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameters of ``model``; ZeRO-3 partitioned parameters count at full size."""
    total = trainable = 0
    for p in model.parameters():
        n = int(getattr(p, "ds_numel", p.numel()))
        total += n
        trainable += n if p.requires_grad else 0
    return total, trainable


def human(n: float) -> str:
    """12_345_678 -> '12.3M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def _model_line(cfg: RunConfig, task: TrainingTask) -> str:
    m = task.model_config
    total, trainable = count_parameters(task.model)
    kv = f" ({m.kv_heads} kv)" if m.kv_heads != m.n_heads else ""
    share = "all trainable" if trainable == total else f"{human(trainable)} trainable"
    return (f"{m.name}: {m.n_layers} layers, dim {m.dim}, {m.n_heads} heads{kv}, vocab {m.vocab_size}; "
            f"{human(total)} parameters ({share}); attention {cfg.model.attention_backend}")


def _data_line(cfg: RunConfig, task: TrainingTask) -> str:
    t = cfg.train
    if isinstance(cfg, FinetuneRunConfig):
        ft = cfg.finetune
        labels = (task.head or {}).get("labels")
        what = f"{ft.task}" + (f" ({', '.join(map(str, labels))})" if labels else "")
        lora = f", LoRA rank {ft.lora.rank}" if ft.lora.enabled else ""
        packing = ", packed" if ft.packing else ""
        return f"{ft.dataset} for {what}{lora}; seq_len {t.seq_len}{packing}; from {ft.init}"
    weights: dict[str, float] = dict(getattr(task.train_loader, "weights", None) or {})
    total = sum(weights.values()) or 1.0
    mixture = ", ".join(f"{name} {w / total:.0%}" for name, w in weights.items())
    masking = ", document masking" if cfg.data.document_masking else ""
    return f"{cfg.data.config}: {mixture or 'no sources'}; seq_len {t.seq_len}{masking}"


def summary_lines(cfg: RunConfig, env: DistEnv, task: TrainingTask, *, device: str, config_file: Path,
                  resumed_from: Path | None, progress: str) -> list[str]:
    """The summary as lines (the first one a title, the others ``key  value``)."""
    t, o, lg = cfg.train, cfg.optim, cfg.logging
    accumulation = t.global_batch_size // (t.micro_batch_size * env.world_size)
    offload = [name for name, on in (("optimizer", t.offload_optimizer), ("parameters", t.offload_params)) if on]
    sinks = [name for name, on in (("metrics.jsonl", lg.jsonl), ("TensorBoard", lg.tensorboard),
                                   ("W&B", lg.wandb)) if on]
    command = "finetune" if isinstance(cfg, FinetuneRunConfig) else "train"
    start = f"resuming from {resumed_from}" if resumed_from else "fresh start"
    rows = [
        ("model", _model_line(cfg, task)),
        ("data", _data_line(cfg, task)),
        ("batch", f"global {t.global_batch_size} = micro {t.micro_batch_size} x accumulation {accumulation} "
                  f"x {env.world_size} data-parallel rank(s); up to {t.global_batch_size * t.seq_len:,} tokens/step"),
        ("steps", f"{t.max_steps}, AdamW lr {o.lr:g} ({o.schedule}, warmup {o.warmup_steps}), "
                  f"clip {t.grad_clip:g}, " + (f"eval every {t.eval_every}" if t.eval_every else "eval at the end")),
        ("precision", f"{t.precision}; ZeRO stage {t.zero_stage}"
                      + (f", offload {' and '.join(offload)} to CPU" if offload else "")),
        ("launcher", f"{env.launcher}, world size {env.world_size} on {device}"),
        ("run dir", f"{Path(cfg.checkpoint.dir) / t.run_name} ({start})"),
        ("config", f"{config_file} (every setting; `llmtrain config explain KEY` says what each means)"),
        ("logging", f"every {lg.log_every} step(s) as {progress}" + (f"; {', '.join(sinks)}" if sinks else "")),
    ]
    width = max(len(k) for k, _ in rows)
    return [f"[llmtrain] {command}: {t.run_name}"] + [f"  {k.ljust(width)}  {v}" for k, v in rows]


def progress_style(progress_bar: bool, stream: Any = None) -> str:
    """How step progress shows: a bar (above it, the periodic lines) on a terminal when asked for, lines otherwise."""
    return "lines under a progress bar" if progress_bar and is_terminal(stream) else "lines"


def announce(cfg: RunConfig, env: DistEnv, task: TrainingTask, *, device: str, config_file: Path,
             resumed_from: Path | None) -> None:
    """Log the start-up summary (rank 0 only, through the package logger)."""
    lines = summary_lines(cfg, env, task, device=device, config_file=config_file, resumed_from=resumed_from,
                          progress=progress_style(cfg.logging.progress_bar))
    log.info("\n".join(lines))
