"""Building a model whose parameters are created partitioned across the data-parallel ranks (ZeRO-3).

Without this every rank builds the whole model in host memory before DeepSpeed partitions it: an
8B model costs 30 GiB of fp32 per rank, a 70B model cannot start at all. Inside
:func:`partitioned_construction` DeepSpeed's ``zero.Init`` partitions each module's parameters as
soon as that module's ``__init__`` returns, so a rank holds about 1/N of the model plus the one
module being built.

The trap: a whole-model initialisation that runs after the children exist (``Transformer.init_weights``)
sees only empty partitions and silently does nothing. Here every ``torch.nn.init`` function called on
a partitioned parameter gathers that one parameter, runs, and re-partitions it (rank 0's values are
kept; every rank draws the same numbers from the same seed, so the RNG stays in step across ranks).
The initialisation is therefore applied per parameter, in the model's own order, and the weights
equal those of a non-partitioned construction with the same seed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from llmtrain.modelio.load import Partitioning

# torch.nn.init functions that write a tensor in place (first argument); a model's init code calls them
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


def zero3_enabled(ds_config: dict[str, Any]) -> bool:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0)) == 3


def is_partitioned(p: torch.Tensor) -> bool:
    """Whether ``p`` is a ZeRO-3 parameter (its ``data`` is an empty placeholder outside a gather)."""
    return hasattr(p, "ds_id")


def full_shape(p: torch.Tensor) -> tuple[int, ...]:
    """The shape of the whole parameter, partitioned or not."""
    return tuple(p.ds_shape) if is_partitioned(p) else tuple(p.shape)


@contextlib.contextmanager
def whole(params: list[nn.Parameter], *, modifier_rank: int | None = 0) -> Iterator[None]:
    """The given parameters whole on every rank; with ``modifier_rank`` that rank's writes are kept.

    A collective when any of them is partitioned: every rank must enter it with the same list.
    """
    partitioned = [p for p in params if is_partitioned(p)]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=modifier_rank):
        yield


def _gathering(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def init(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not is_partitioned(tensor):
            return fn(tensor, *args, **kwargs)
        with whole([tensor], modifier_rank=0):
            return fn(tensor, *args, **kwargs)

    return init


@contextlib.contextmanager
def _init_per_parameter() -> Iterator[None]:
    """``torch.nn.init`` functions gather a partitioned parameter around their write (see the module doc)."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS if hasattr(nn.init, name)}
    try:
        for name, fn in saved.items():
            setattr(nn.init, name, _gathering(fn))
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


@contextlib.contextmanager
def partitioned_construction(ds_config: dict[str, Any]) -> Iterator[None]:
    """Modules built inside have their parameters partitioned at once (ZeRO-3 only; otherwise a no-op)."""
    if not (zero3_enabled(ds_config) and dist.is_initialized()):
        yield
        return
    import deepspeed

    offload = ds_config.get("zero_optimization", {}).get("offload_param", {}).get("device", "none")
    remote = "cpu" if offload == "cpu" else None
    with deepspeed.zero.Init(config_dict_or_path=ds_config, remote_device=remote), _init_per_parameter():
        yield


def partitioning(cfg: Any, world_size: int, *, on_gpu: bool) -> Partitioning | None:
    """How to build and fill the model of run config ``cfg`` partitioned; None unless ZeRO-3 runs distributed."""
    from llmtrain.engine.ds_config import build_ds_config

    ds_config = build_ds_config(cfg, world_size, on_gpu=on_gpu)
    if not (zero3_enabled(ds_config) and dist.is_initialized()):
        return None
    return Partitioning(construct=lambda: partitioned_construction(ds_config), whole=whole,
                        writer=dist.get_rank() == 0, full_shape=full_shape)
