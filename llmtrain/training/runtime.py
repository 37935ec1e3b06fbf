"""Process set-up shared by `llmtrain train` and `llmtrain finetune`: rank discovery, device,
process group, seeds, and the resolved config logged (rank 0) and saved with the run."""

from __future__ import annotations

import random
from pathlib import Path

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.checkpoint.dir) / cfg.train.run_name


def announce(cfg: RunConfig, env: DistEnv) -> None:
    """Log the resolved config on rank 0 and save it as <run dir>/config.yaml."""
    if env.rank != 0:
        return
    text = dump_yaml(cfg)
    log.info(f"[llmtrain] {env.launcher} launcher, {env.world_size} process(es); resolved config:\n{text}")
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_YAML).write_text(text)
