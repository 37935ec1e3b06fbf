"""Checkpoint layout, atomic `latest`, rotation, resume resolution, universal resharding, consolidation.

```
<checkpoint.dir>/<run_name>/
  latest                      text file with the newest complete tag, replaced atomically, written last
  step_000123/                DeepSpeed's sharded states (mp_rank_*, *optim_states.pt) plus:
    trainer_state.json        step, consumed samples/tokens, loader state, dp size, metrics
    rng_rank<R>.pt            torch/numpy/python RNG state of rank R (tensors only)
    config.yaml               the resolved run config
    ds_config.json            the DeepSpeed JSON the engine ran with
    model.safetensors         consolidated weights (+ model.yaml) for export and fine-tuning
    tokenizer/                the tokenizer the data was made with
  step_000123_universal/      made on demand when resuming on another data-parallel size
```
A step directory counts only once `latest` names it (or a later step): a crash mid-save leaves
the previous checkpoint and `latest` untouched.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from llmtrain.config.base import build, to_dict
from llmtrain.config.schema import ModelConfig
from llmtrain.errors import CheckpointError

LATEST = "latest"
STATE = "trainer_state.json"
WEIGHTS = "model.safetensors"
MODEL_YAML = "model.yaml"


def tag_for(step: int) -> str:
    return f"step_{step:06d}"


def read_latest(run_dir: Path) -> Path | None:
    """The step directory named by ``run_dir/latest``, or None when there is no checkpoint yet."""
    latest = run_dir / LATEST
    if not latest.is_file():
        return None
    tag = latest.read_text().strip()
    step_dir = run_dir / tag
    if not (step_dir / STATE).is_file():
        raise CheckpointError(
            f"{latest} names {tag}, but {step_dir / STATE} is missing: the checkpoint is incomplete or was "
            f"moved. Point --resume at an intact step directory, or start over with --resume never.")
    return step_dir


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


def damaged(step_dir: Path, error: BaseException) -> CheckpointError:
    """The error for a checkpoint whose DeepSpeed or RNG files cannot be read, naming earlier ones."""
    earlier = sorted(p for p in step_dir.parent.glob("step_*")
                     if p.name < step_dir.name and not p.name.endswith("_universal") and (p / STATE).is_file())
    hint = (f"resume from an earlier one with --resume {earlier[-1]}" if earlier
            else "no earlier checkpoint exists; start a new run (another train.run_name)")
    first = (str(error).splitlines() or [""])[0].split(". ")[0][:200]
    return CheckpointError(f"cannot load checkpoint {step_dir}: its files are truncated or damaged "
                           f"({type(error).__name__}: {first}); {hint}")


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run directory (uses its `latest`) or a step directory; return the step directory."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist; pass a run directory (with `latest`) or a step_* directory")
    if (p / STATE).is_file():
        return p
    if p.is_dir() and (p / LATEST).exists():
        found = read_latest(p)
        assert found is not None
        return found
    raise CheckpointError(
        f"{p} is neither a step directory (no {STATE}) nor a run directory (no `latest` file); "
        f"checkpoints written by `llmtrain train` look like <run>/step_000100/ with <run>/latest")


def read_state(step_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((step_dir / STATE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{step_dir / STATE} is unreadable ({e}); the checkpoint is damaged, resume from an earlier step") from None


def read_model_config(step_dir: Path) -> ModelConfig:
    path = step_dir / MODEL_YAML
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {step_dir} was not written by llmtrain (or is incomplete)")
    return build(ModelConfig, yaml.safe_load(path.read_text()), prefix="model", source=str(path))


def model_config_diff(saved: ModelConfig, current: ModelConfig) -> list[str]:
    """Fields whose values differ between two model configs (ignoring runtime-only switches)."""
    runtime = {"attention_backend", "activation_checkpointing", "compile", "name"}
    a, b = to_dict(saved), to_dict(current)
    return [f"model.{k}: checkpoint {a[k]!r} vs config {b[k]!r}" for k in a if k not in runtime and a[k] != b.get(k)]


def save_rng(step_dir: Path, rank: int) -> None:
    import random

    import numpy as np

    state = {"torch": torch.get_rng_state(), "numpy": json.dumps(np.random.get_state()[1].tolist()),
             "python": json.dumps(random.getstate()[1])}
    torch.save({"torch": state["torch"]}, step_dir / f"rng_rank{rank}.pt")
    (step_dir / f"rng_rank{rank}.json").write_text(json.dumps({"numpy": state["numpy"], "python": state["python"]}))


def load_rng(step_dir: Path, rank: int) -> None:
    path = step_dir / f"rng_rank{rank}.pt"
    if path.is_file():  # absent when resuming on more ranks than were saved: seeds stay as set
        torch.set_rng_state(torch.load(path, weights_only=True)["torch"])


def save_weights(state_dict: dict[str, torch.Tensor], model_cfg: ModelConfig, step_dir: Path, head: dict | None = None) -> None:
    """Consolidated weights as safetensors (tied tensors cloned: safetensors refuses shared storage)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(step_dir / WEIGHTS), metadata={"format": "pt"})
    (step_dir / MODEL_YAML).write_text(yaml.safe_dump(to_dict(model_cfg), sort_keys=False))
    if head:
        (step_dir / "head.json").write_text(json.dumps(head, indent=2))


def load_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    """Consolidated weights of a checkpoint: model.safetensors, else DeepSpeed's zero_to_fp32."""
    from safetensors.torch import load_file

    path = step_dir / WEIGHTS
    if path.is_file():
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is damaged ({e}); re-export from the DeepSpeed states or use an earlier step") from None
    return consolidate_deepspeed(step_dir)


def consolidate_deepspeed(step_dir: Path) -> dict[str, torch.Tensor]:
    """fp32 weights from DeepSpeed's files: stage 0 keeps them in mp_rank_00_model_states.pt,
    stages 1-3 are merged from the partitioned optimizer states by zero_to_fp32."""
    run_dir, tag = step_dir.parent, step_dir.name
    if list(step_dir.glob("*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        merged = get_fp32_state_dict_from_zero_checkpoint(str(run_dir), tag=tag)
        return {k.removeprefix("model."): v for k, v in merged.items()}
    files = sorted(step_dir.glob("mp_rank_*_model_states.pt"))
    if not files:
        raise CheckpointError(f"{step_dir} holds neither {WEIGHTS} nor DeepSpeed model states; it is not a usable checkpoint")
    # DeepSpeed pickles a dict of tensors, numbers and strings: torch's restricted unpickler reads it
    try:
        states = torch.load(files[0], map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise damaged(step_dir, e) from e
    # the engine wrapped the model in the trainer's LossModule, hence the "model." prefix
    return {k.removeprefix("model."): v.float() for k, v in states["module"].items()}


def rotate(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step directories (never the one `latest` names)."""
    if keep_last <= 0:
        return
    current = (run_dir / LATEST).read_text().strip() if (run_dir / LATEST).is_file() else None
    steps = sorted(p for p in run_dir.glob("step_*") if p.is_dir() and not p.name.endswith("_universal") and (p / STATE).is_file())
    for old in steps[:-keep_last]:
        if old.name == current:
            continue
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(run_dir / f"{old.name}_universal", ignore_errors=True)
    # leftovers of saves that crashed before completing (no trainer_state.json)
    for partial in run_dir.glob("step_*"):
        if partial.is_dir() and not partial.name.endswith("_universal") and not (partial / STATE).is_file() and partial.name != current:
            newest = steps[-1].name if steps else ""
            if partial.name < newest:
                shutil.rmtree(partial, ignore_errors=True)


def make_universal(step_dir: Path) -> Path:
    """Convert a DeepSpeed checkpoint to the universal format (for another data-parallel size)."""
    out = step_dir.with_name(step_dir.name + "_universal")
    if (out / "zero").is_dir() or (out / ".complete").exists():
        return out
    tmp = step_dir.with_name(step_dir.name + "_universal.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(step_dir),
           "--output_folder", str(tmp), "--inject_missing_state", "--num_extract_workers", "1", "--num_merge_workers", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")})
    if proc.returncode != 0:
        raise CheckpointError(f"converting {step_dir} to a universal checkpoint failed:\n{proc.stderr[-2000:]}")
    # ds_to_universal writes a `latest_universal` file beside the folder; the folder is what we load
    (tmp / ".complete").write_text("")
    os.replace(tmp, out)
    return out
