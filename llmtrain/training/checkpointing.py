"""The checkpoint manager: resume policy, compatibility checks, the save protocol, `latest`, rotation.

```
<checkpoint.dir>/<run_name>/
  latest                      text file with the newest complete tag, replaced atomically, written last
  step_000123/                the engine's sharded states (DeepSpeed: mp_rank_*, *optim_states.pt) plus:
    trainer_state.json        step, consumed samples/tokens, loader state, dp size, metrics
    rng_rank<R>.pt/.json      torch (tensors only) / numpy and python RNG states of rank R
    config.yaml               the resolved run config
    ds_config.json            the engine's settings (the DeepSpeed JSON)
    model.safetensors         consolidated weights (+ model.yaml, head.json) for export and fine-tuning
    tokenizer/                the tokenizer the data was made with
  step_000123_universal/      made on demand when resuming on another data-parallel size
```
A step directory counts only once `latest` names it (or a later step): a crash mid-save leaves
the previous checkpoint and `latest` untouched. File names come from :mod:`llmtrain.modelio.layout`.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmtrain.config.loader import dump_yaml
from llmtrain.distributed.collectives import barrier, is_rank0
from llmtrain.distributed.logging import get_logger
from llmtrain.engine.base import Engine
from llmtrain.engine.resume import refuse_another_zero_stage
from llmtrain.errors import CheckpointError
from llmtrain.fsutil import atomic_write_text
from llmtrain.modelio.layout import (
    CONFIG_YAML,
    DS_CONFIG,
    HEAD_FILE,
    LATEST,
    STATE,
    TOKENIZER_SUBDIR,
    UNIVERSAL_SUFFIX,
    damaged,
    read_latest,
    read_model_config,
    read_state,
    resolve_checkpoint,
    rng_files,
    tag_for,
    write_model_config,
)
from llmtrain.training.consolidation import consolidates, resolve_policy, write_consolidated
from llmtrain.training.task import TrainingTask

log = get_logger(__name__)


@dataclass
class Progress:
    """The loop's counters that a checkpoint carries (besides the engine's own states)."""

    step: int = 0
    consumed_tokens: int = 0
    skipped_steps: int = 0
    last_loss: float | None = None


@dataclass
class ResumePoint:
    step_dir: Path
    state: dict[str, Any]
    reshard: bool  # saved on another data-parallel size or ZeRO stage


class CheckpointManager:
    """Everything about checkpoints of one run directory, for one rank."""

    def __init__(self, run_dir: Path, *, resume: str, keep_last: int, rank: int, world_size: int) -> None:
        self.run_dir, self.resume_mode, self.keep_last = run_dir, resume, keep_last
        self.rank, self.world_size = rank, world_size

    # ---- resuming -------------------------------------------------------------------------------
    def find_resume_point(self, task: TrainingTask, zero_stage: int) -> ResumePoint | None:
        """Apply ``checkpoint.resume`` (auto | never | PATH) and refuse incompatible checkpoints."""
        mode, latest = self.resume_mode, self.run_dir / LATEST
        if mode in ("never", "auto") and not latest.exists():
            refuse_uncommitted(self.run_dir)
        if mode == "never":
            if latest.exists():
                raise CheckpointError(
                    f"{self.run_dir} already holds checkpoints and checkpoint.resume=never would overwrite them; "
                    f"use --resume auto to continue, another train.run_name, or delete the directory yourself")
            return None
        step_dir = read_latest(self.run_dir) if mode == "auto" else resolve_checkpoint(mode)
        if step_dir is None:
            return None
        state = read_state(step_dir)
        lacking = [k for k in ("step", "consumed_tokens", "dp_size", "loader") if k not in state]
        if lacking:
            raise CheckpointError(f"{step_dir / STATE} lacks {', '.join(lacking)}; the checkpoint is damaged or was "
                                  f"not written by llmtrain train. Resume from another step with --resume STEP_DIR")
        self._check_compatible(step_dir, state, task)
        refuse_another_zero_stage(step_dir, state.get("zero_stage", zero_stage), zero_stage)
        reshard = zero_stage > 0 and (state["dp_size"] != self.world_size or state["zero_stage"] != zero_stage)
        return ResumePoint(step_dir, state, reshard)

    def _check_compatible(self, step_dir: Path, state: dict[str, Any], task: TrainingTask) -> None:
        diff = read_model_config(step_dir).architecture_diff(task.model_config)
        if diff:
            raise CheckpointError(
                f"cannot resume from {step_dir}: the model config differs ({'; '.join(diff)}). "
                f"Resume with the original model settings, or start a new run (another train.run_name).")
        fp_saved, fp_now = state.get("tokenizer_fingerprint"), task.extra_state.get("tokenizer_fingerprint")
        if fp_saved and fp_now and fp_saved != fp_now:
            raise CheckpointError(
                f"cannot resume from {step_dir}: it was trained with tokenizer {fp_saved[:12]}, the data now "
                f"uses {fp_now[:12]}. Re-prepare the data with the original tokenizer or start a new run.")

    def restore(self, engine: Engine, point: ResumePoint, task: TrainingTask) -> Progress:
        """Load the engine's states, this rank's RNG and the loader position; return the counters."""
        try:
            engine.load(point.step_dir, reshard=point.reshard)
            if not point.reshard:
                load_rng(point.step_dir, self.rank)
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise damaged(point.step_dir, e) from e
        s = point.state
        task.train_loader.load_state_dict(s["loader"])
        log.info(f"[llmtrain] resumed from {point.step_dir} at step {s['step']} "
                 f"({s['dp_size']} -> {self.world_size} data-parallel ranks)")
        return Progress(step=s["step"], consumed_tokens=s["consumed_tokens"], skipped_steps=s.get("skipped_steps", 0),
                        last_loss=s.get("last_loss"))

    # ---- saving ---------------------------------------------------------------------------------
    def save(self, engine: Engine, progress: Progress, task: TrainingTask, *, run_config: Any, global_batch_size: int,
             zero_stage: int, precision: str, states_written: Callable[[int], None] | None = None) -> Path:
        """The save protocol; every rank calls it. `latest` moves only once every rank has written."""
        tag = tag_for(progress.step)
        step_dir = self.run_dir / tag
        if is_rank0():
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                if step_dir.exists() and read_latest(self.run_dir) != step_dir:
                    shutil.rmtree(step_dir)  # leftovers of a save that crashed
            except OSError as e:
                raise CheckpointError(f"cannot write checkpoints to {self.run_dir}: {e}. Free space or choose "
                                      f"checkpoint.dir elsewhere; earlier checkpoints are untouched") from None
        barrier()
        started = time.perf_counter()
        try:
            engine.save(self.run_dir, tag)
            if states_written is not None:
                states_written(progress.step)
            states_s = time.perf_counter() - started
            policy = run_config.checkpoint.consolidate
            written = None
            if consolidates(policy, task, step=progress.step, max_steps=run_config.train.max_steps):
                written = write_consolidated(engine, task, step_dir)
            if is_rank0():
                self._write_metadata(step_dir, progress, task, engine, run_config,
                                     global_batch_size=global_batch_size, zero_stage=zero_stage, precision=precision)
                _log_save(step_dir, states_s, written, resolve_policy(policy, task))
            save_rng(step_dir, self.rank)
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
            if isinstance(e, RuntimeError) and is_collective_failure(e):
                raise
            prev = read_latest(self.run_dir) if (self.run_dir / LATEST).exists() else None
            free = shutil.disk_usage(self.run_dir).free / 2**20
            raise CheckpointError(
                f"writing checkpoint {step_dir} failed on rank {self.rank}: {str(e).splitlines()[0][:200]} "
                f"({free:.1f} MiB free on that file system{': the disk is full' if free < 1 else ''}). The previous "
                f"checkpoint ({prev or 'none'}) and `latest` are unchanged; free disk space (or point checkpoint.dir "
                f"elsewhere) and relaunch to resume from it.") from None
        barrier()
        if is_rank0():
            atomic_write_text(self.run_dir / LATEST, tag)
            rotate(self.run_dir, self.keep_last)
        barrier()
        return step_dir

    def _write_metadata(self, step_dir: Path, progress: Progress, task: TrainingTask, engine: Engine,
                        run_config: Any, *, global_batch_size: int, zero_stage: int, precision: str) -> None:
        write_model_config(step_dir, task.model_config)
        if task.head:
            (step_dir / HEAD_FILE).write_text(json.dumps(task.head, indent=2))
        (step_dir / CONFIG_YAML).write_text(dump_yaml(run_config))
        (step_dir / DS_CONFIG).write_text(json.dumps(engine.config, indent=2, default=str))
        for name, text in task.extra_files.items():
            (step_dir / name).write_text(text)
        if task.tokenizer_dir is not None:
            copy_tokenizer_files(task.tokenizer_dir, step_dir / TOKENIZER_SUBDIR)
        state = {
            "step": progress.step, "consumed_samples": progress.step * global_batch_size,
            "consumed_tokens": progress.consumed_tokens, "skipped_steps": progress.skipped_steps,
            "loader": task.train_loader.state_dict(), "dp_size": self.world_size,
            "zero_stage": zero_stage, "precision": precision, "last_loss": progress.last_loss,
            **task.extra_state,
        }
        atomic_write_text(step_dir / STATE, json.dumps(state, indent=2))


def _log_save(step_dir: Path, states_s: float, written: dict[str, Any] | None, policy: str) -> None:
    if written is None:
        log.info(f"[llmtrain] saved {step_dir.name}: engine states {states_s:.1f} s; no consolidated weights "
                 f"(checkpoint.consolidate={policy}: `llmtrain export` consolidates them from the states)")
        return
    size = sum(written["bytes"].values()) / 2**20
    log.info(f"[llmtrain] saved {step_dir.name}: engine states {states_s:.1f} s, consolidated weights "
             f"{written['seconds']:.1f} s ({size:.1f} MiB, streamed layer by layer)")


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    """The tokenizer's files only: a fine-tune from a Hugging Face directory must not copy its weights."""
    from llmtrain.data.tokenizer import tokenizer_files

    dst.mkdir(parents=True, exist_ok=True)
    for f in tokenizer_files(src):
        shutil.copy2(f, dst / f.name)


def is_collective_failure(e: BaseException) -> bool:
    """Gloo/NCCL report a dead or hung peer as a bare RuntimeError (or DistError) naming the backend."""
    import torch.distributed as dist

    text = str(e)
    return isinstance(e, dist.DistError) or any(
        w in text for w in ("gloo", "NCCL", "Connection reset by peer", "Connection closed by peer", "Timed out waiting"))


def refuse_uncommitted(run_dir: Path) -> None:
    """Refuse a run directory that holds step directories with a trainer state but no `latest`.

    Starting over there would overwrite them: either `latest` was deleted, or the run crashed
    between writing its first trainer_state.json and committing it (which of the two cannot be told).
    """
    found = sorted(p.name for p in run_dir.glob("step_*") if (p / STATE).is_file())
    if found:
        raise CheckpointError(
            f"{run_dir} holds {', '.join(found)} but no `latest` file, so it is unclear which checkpoint is "
            f"complete; starting over would overwrite them. Resume explicitly with --resume {run_dir / found[-1]} "
            f"(or an earlier step), or start a new run (another train.run_name) / delete the directory yourself")


def save_rng(step_dir: Path, rank: int) -> None:
    """torch's state as a tensor file (read back with weights_only), numpy/python states as JSON."""
    pt, js = rng_files(rank)
    torch.save({"torch": torch.get_rng_state()}, step_dir / pt)
    (step_dir / js).write_text(json.dumps({
        "numpy": json.dumps(np.random.get_state()[1].tolist()), "python": json.dumps(random.getstate()[1])}))


def load_rng(step_dir: Path, rank: int) -> None:
    path = step_dir / rng_files(rank)[0]
    if path.is_file():  # absent when resuming on more ranks than were saved: seeds stay as set
        torch.set_rng_state(torch.load(path, weights_only=True)["torch"])


def rotate(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step directories (never the one `latest` names)."""
    if keep_last <= 0:
        return
    current = (run_dir / LATEST).read_text().strip() if (run_dir / LATEST).is_file() else None
    steps = sorted(p for p in run_dir.glob("step_*")
                   if p.is_dir() and not p.name.endswith(UNIVERSAL_SUFFIX) and (p / STATE).is_file())
    for old in steps[:-keep_last]:
        if old.name == current:
            continue
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(run_dir / f"{old.name}{UNIVERSAL_SUFFIX}", ignore_errors=True)
    # leftovers of saves that crashed before completing (no trainer_state.json)
    newest = steps[-1].name if steps else ""
    for partial in run_dir.glob("step_*"):
        if (partial.is_dir() and not partial.name.endswith(UNIVERSAL_SUFFIX) and not (partial / STATE).is_file()
                and partial.name != current and partial.name < newest):
            shutil.rmtree(partial, ignore_errors=True)
