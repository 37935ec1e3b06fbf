"""Engines: what owns the parameters and the optimizer (see :mod:`llmtrain.engine.base`).

``build_engine`` picks the implementation; DeepSpeed is the only one today, imported lazily so that
code which only reads configs or checkpoints never imports DeepSpeed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from llmtrain.engine.base import Engine, StepReport

__all__ = ["Engine", "StepReport", "build_engine", "init_process_group", "partitioning"]


def build_engine(cfg: Any, model: nn.Module, loss_fn: Callable, *, world_size: int, on_gpu: bool, reshard: bool,
                 make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None,
                 make_scheduler: Callable[[torch.optim.Optimizer], Any]) -> Engine:
    """The engine for run config ``cfg``; ``reshard`` prepares loading a checkpoint of another world size.

    ``make_optimizer`` is None when the user's ``deepspeed:`` section configures DeepSpeed's own optimizer.
    """
    from llmtrain.engine.deepspeed import DeepSpeedEngine, universal_config
    from llmtrain.engine.ds_config import build_ds_config

    ds_config = build_ds_config(cfg, world_size, on_gpu=on_gpu)
    if reshard:
        ds_config = universal_config(ds_config)
    if "optimizer" in cfg.deepspeed:
        make_optimizer = None
    engine = DeepSpeedEngine(model, loss_fn, ds_config, make_optimizer=make_optimizer, make_scheduler=make_scheduler,
                             seed=cfg.train.seed)
    engine.trust_pickle = cfg.checkpoint.trust_pickle
    return engine


def init_process_group(env: Any, *, device: str, timeout_s: int) -> None:
    """Create the default process group the way the engine needs it (DeepSpeed: its own init)."""
    from llmtrain.engine.deepspeed import init_process_group as init

    init(env, device=device, timeout_s=timeout_s)


def partitioning(cfg: Any, world_size: int, *, on_gpu: bool) -> Any:
    """How to build the model of ``cfg`` partitioned (a :class:`llmtrain.modelio.load.Partitioning`), or None.

    Only ZeRO-3 partitions parameters; the other stages (and a single process) build the whole model.
    """
    from llmtrain.engine.construction import partitioning as make

    return make(cfg, world_size, on_gpu=on_gpu)
