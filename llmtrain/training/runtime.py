"""Process set-up shared by `llmtrain train` and `llmtrain finetune`: rank discovery, device,
process group, seeds, and the resolved config saved with the run."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmtrain.config.loader import dump_yaml
from llmtrain.config.roots import RunConfig
from llmtrain.config.validate import validate_for_world
from llmtrain.distributed.env import DistEnv, discover
from llmtrain.distributed.logging import get_logger
from llmtrain.modelio.layout import CONFIG_YAML

log = get_logger(__name__)


def pick_device(cfg: RunConfig, env: DistEnv) -> torch.device:
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        from llmtrain.errors import UserError

        raise UserError("train.device=cuda but no CUDA GPU is visible; use train.device=auto or cpu")
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def start(cfg: RunConfig) -> tuple[DistEnv, torch.device]:
    """Discover the launcher, check what depends on the world size, set the device, create the
    process group, seed every RNG."""
    env = discover()
    validate_for_world(cfg, env.world_size)  # before any process group or compute
    device = pick_device(cfg, env)
    if device.type == "cpu" and cfg.train.precision == "fp16":
        from llmtrain.errors import UserError

        raise UserError("train.precision=fp16 needs a GPU (loss scaling kernels); use bf16 or fp32 on CPU")
    from llmtrain.engine import init_process_group

    init_process_group(env, device=device.type, timeout_s=cfg.train.collective_timeout_s)
    seed_everything(cfg.train.seed)
    return env, device


def model_partitioning(cfg: RunConfig, env: DistEnv, device: torch.device) -> Any:
    """At ZeRO-3 (distributed): how the model is created partitioned and its weights loaded layer by layer
    (a :class:`llmtrain.modelio.load.Partitioning`, passed to ``load_model``); None otherwise."""
    from llmtrain.engine import partitioning

    return partitioning(cfg, env.world_size, on_gpu=device.type == "cuda")


def model_construction(cfg: RunConfig, env: DistEnv, device: torch.device) -> AbstractContextManager[Any]:
    """Build the model inside this: at ZeRO-3 each rank then holds only its partition of the parameters,
    initialised as the model's own init does (see :mod:`llmtrain.engine.construction`)."""
    part = model_partitioning(cfg, env, device)
    if part is None:
        return nullcontext()
    log.info(f"[llmtrain] ZeRO-3: the model is created partitioned over {env.world_size} ranks")
    return part.construct()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.checkpoint.dir) / cfg.train.run_name


def save_resolved_config(cfg: RunConfig, env: DistEnv) -> Path:
    """Save the resolved config as <run dir>/config.yaml (rank 0 writes); returns its path."""
    path = run_dir_of(cfg) / CONFIG_YAML
    if env.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_yaml(cfg))
    return path
