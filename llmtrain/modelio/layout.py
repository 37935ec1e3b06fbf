"""Every file name llmtrain writes beside weights, and how checkpoint directories are found and read.

```
<checkpoint.dir>/<run_name>/
  latest                      LATEST: the newest complete tag, replaced atomically, written last
  step_000123/                tag_for(123): DeepSpeed's sharded states (mp_rank_*, *optim_states.pt) plus
    trainer_state.json        STATE: step, consumed samples/tokens, loader state, dp size, metrics
    rng_rank<R>.pt/.json      rng_files(R): torch (tensors only) / numpy + python RNG state of rank R
    config.yaml               CONFIG_YAML: the resolved run config
    ds_config.json            DS_CONFIG: the DeepSpeed JSON the engine ran with
    model.safetensors         WEIGHTS: consolidated weights (tied output projection stored once)
    model.yaml                MODEL_YAML: the architecture (llmtrain.model.config.ModelConfig)
    head.json                 HEAD_FILE: a task head's settings ("task": "classification", labels, ...)
    hf_config.json            HF_CONFIG_FILE: the config.json of the Hugging Face model the weights came
                              from (import-hf, fine-tuning); export writes that family back
    hf_module.json            (llmtrain.modelio.hf.generic.HF_MODULE_FILE) the weights are a transformers
                              module's own (a causal LM of no native family); load_model rebuilds that class
    chat_template.txt         CHAT_TEMPLATE_FILE: the SFT prompt template generation reuses
    adapter.safetensors       ADAPTER_WEIGHTS: a LoRA run's unmerged lora_A/lora_B tensors (our names)
    adapter.json              ADAPTER_SETTINGS: their rank, alpha, dropout, targets (export writes a PEFT adapter)
    tokenizer/                TOKENIZER_SUBDIR: the tokenizer the data was made with
```
An llmtrain model directory (``llmtrain import-hf``) holds WEIGHTS, MODEL_YAML, HF_CONFIG_FILE and
TOKENIZER_SUBDIR.
A step directory counts only once ``latest`` names it (or a later step).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from llmtrain.errors import CheckpointError

if TYPE_CHECKING:  # data code imports the file names; it must not pull in the model
    from llmtrain.model.config import ModelConfig

LATEST = "latest"
STATE = "trainer_state.json"
WEIGHTS = "model.safetensors"
MODEL_YAML = "model.yaml"
HEAD_FILE = "head.json"
HF_CONFIG_FILE = "hf_config.json"
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_SETTINGS = "adapter.json"
TOKENIZER_SUBDIR = "tokenizer"
CONFIG_YAML = "config.yaml"
DS_CONFIG = "ds_config.json"
CHAT_TEMPLATE_FILE = "chat_template.txt"
STEP_PREFIX = "step_"
UNIVERSAL_SUFFIX = "_universal"


def tag_for(step: int) -> str:
    """The step directory name of ``step`` (zero-padded so that names sort by step)."""
    return f"{STEP_PREFIX}{step:06d}"


def rng_files(rank: int) -> tuple[str, str]:
    """(torch RNG file, numpy/python RNG file) of ``rank``."""
    return f"rng_rank{rank}.pt", f"rng_rank{rank}.json"


def read_latest(run_dir: Path) -> Path | None:
    """The step directory named by ``run_dir/latest``, or None when there is no checkpoint yet."""
    latest = run_dir / LATEST
    if not latest.is_file():
        return None
    tag = latest.read_text().strip()
    step_dir = run_dir / tag
    if not tag or "/" in tag:  # written atomically by the trainer: empty or a path means it was edited or damaged
        steps = sorted(p.name for p in run_dir.glob(f"{STEP_PREFIX}*") if (p / STATE).is_file())
        raise CheckpointError(
            f"{latest} holds {tag!r}, not a step directory name (e.g. step_000100); it is damaged. Resume explicitly "
            f"with --resume {run_dir / steps[-1] if steps else '<step directory>'}, or write that name into it")
    if not (step_dir / STATE).is_file():
        raise CheckpointError(
            f"{latest} names {tag}, but {step_dir / STATE} is missing: the checkpoint is incomplete or was "
            f"moved. Point --resume at an intact step directory, or start over with --resume never.")
    return step_dir


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


def is_checkpoint(path: str | Path) -> bool:
    """A step directory or a run directory with ``latest``."""
    p = Path(path)
    return (p / STATE).is_file() or (p / LATEST).is_file()


def damaged(step_dir: Path, error: BaseException) -> CheckpointError:
    """The error for a checkpoint whose DeepSpeed or RNG files cannot be read, naming earlier ones."""
    earlier = sorted(p for p in step_dir.parent.glob(f"{STEP_PREFIX}*")
                     if p.name < step_dir.name and not p.name.endswith(UNIVERSAL_SUFFIX) and (p / STATE).is_file())
    hint = (f"resume from an earlier one with --resume {earlier[-1]}" if earlier
            else "no earlier checkpoint exists; start a new run (another train.run_name)")
    first = (str(error).splitlines() or [""])[0].split(". ")[0][:200]
    return CheckpointError(f"cannot load checkpoint {step_dir}: its files are truncated or damaged "
                           f"({type(error).__name__}: {first}); {hint}")


def read_state(step_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((step_dir / STATE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{step_dir / STATE} is unreadable ({e}); the checkpoint is damaged, resume from an earlier step") from None


def read_model_config(directory: Path) -> ModelConfig:
    """The architecture in ``directory/model.yaml`` (a step or model directory).

    Files written before the run-time switches left the model config carry ``attention_backend``,
    ``activation_checkpointing`` and ``compile``; exactly those keys are accepted and dropped.
    """
    from llmtrain.config.base import build
    from llmtrain.model.config import ModelConfig
    from llmtrain.model.runtime import RUNTIME_KEYS

    path = directory / MODEL_YAML
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {directory} was not written by llmtrain (or is incomplete)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path} is not valid YAML ({e}); the directory is damaged") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a mapping of model fields, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k not in RUNTIME_KEYS}
    return build(ModelConfig, data, prefix="model", source=str(path))


def write_model_config(directory: Path, cfg: ModelConfig) -> Path:
    """``directory/model.yaml`` with the architecture fields only (never run-time switches)."""
    path = directory / MODEL_YAML
    path.write_text(yaml.safe_dump(cfg.architecture_dict(), sort_keys=False))
    return path


def read_head(directory: Path) -> dict[str, Any]:
    """``head.json`` of a model with a task head, or {} when there is none."""
    path = directory / HEAD_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is unreadable ({e}); the checkpoint is damaged") from None


def write_chat_template(directory: str | Path, template: str) -> Path:
    """Save an SFT prompt template beside weights or an export, so generation can reuse it."""
    path = Path(directory) / CHAT_TEMPLATE_FILE
    path.write_text(template, encoding="utf-8")
    return path


def read_chat_template(directory: str | Path) -> str | None:
    """The template saved with a model, or None for a model that was not chat-tuned."""
    path = Path(directory) / CHAT_TEMPLATE_FILE
    return path.read_text(encoding="utf-8") if path.is_file() else None
