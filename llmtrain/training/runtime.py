"""Process set-up shared by `llmtrain train` and `llmtrain finetune`: rank discovery, device,
process group, seeds, and the resolved config printed (rank 0) and saved with the run."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from llmtrain.config.loader import dump_yaml
from llmtrain.config.schema import RunConfig
from llmtrain.distributed.env import DistEnv, discover, init_distributed


def pick_device(cfg: RunConfig, env: DistEnv) -> torch.device:
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        from llmtrain.errors import UserError

        raise UserError("train.device=cuda but no CUDA GPU is visible; use train.device=auto or cpu")
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def start(cfg: RunConfig) -> tuple[DistEnv, torch.device]:
    """Discover the launcher, set the device, create the process group, seed every RNG."""
    env = discover()
    device = pick_device(cfg, env)
    if device.type == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"
        skip_cpu_shm_op()
        if cfg.train.precision == "fp16":
            from llmtrain.errors import UserError

            raise UserError("train.precision=fp16 needs a GPU (loss scaling kernels); use bf16 or fp32 on CPU")
    init_distributed(env, device=device.type, timeout_s=cfg.train.collective_timeout_s)
    seed_everything(cfg.train.seed)
    return env, device


def skip_cpu_shm_op() -> None:
    """Keep DeepSpeed from JIT-building its shared-memory allreduce op for CPU ranks.

    The build (and even loading a built op) holds a file lock in torch's extension cache; a process
    killed at that moment (preemption, OOM, kill -9) leaves the lock behind and every later run
    waits on it forever. Gloo's allreduce is all CPU training needs, and the first start gets ~35 s
    faster. Setting the entry also spares DeepSpeed's compatibility probe of every other op.
    """
    import deepspeed.ops

    deepspeed.ops.__dict__.setdefault("__compatible_ops__", {})["deepspeed_shm_comm"] = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.checkpoint.dir) / cfg.train.run_name


def announce(cfg: RunConfig, env: DistEnv) -> None:
    """Print the resolved config on rank 0 and save it as <run dir>/config.yaml."""
    if env.rank != 0:
        return
    text = dump_yaml(cfg)
    print(f"[llmtrain] {env.launcher} launcher, {env.world_size} process(es); resolved config:\n{text}", flush=True)
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(text)
