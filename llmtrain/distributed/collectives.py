"""Collective helpers so that distributed code reads like single-process code.

Every helper also works without a process group (a single process, or before initialisation):
then it behaves as rank 0 of a world of one. Scalars are reduced in float64 so that sums of
counters (tokens, checksums) stay exact, and several scalars share one collective.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

import torch
import torch.distributed as dist

from llmtrain.distributed.env import process_rank

T = TypeVar("T")


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank: from the process group once it exists, else from the launcher's variables."""
    return dist.get_rank() if _initialized() else process_rank()


def world_size() -> int:
    return dist.get_world_size() if _initialized() else 1


def is_rank0() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if _initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Return ``src``'s ``obj`` on every rank (any picklable object)."""
    if not _initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not _initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@overload
def all_reduce_mean(values: float, device: torch.device | str) -> float: ...
@overload
def all_reduce_mean(values: list[float], device: torch.device | str) -> list[float]: ...


def all_reduce_mean(values: float | list[float], device: torch.device | str) -> float | list[float]:
    """The mean over ranks of each value (one collective for all of them); a list in, a list out.

    ``device`` is where the collective's buffer lives: the accelerator for NCCL, the CPU for gloo.
    Multiply by :func:`world_size` for a sum.
    """
    single = not isinstance(values, list | tuple)
    t = torch.tensor([values] if single else list(values), dtype=torch.float64, device=device)
    if _initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
        t /= dist.get_world_size()
    out = t.tolist()
    return float(out[0]) if single else [float(v) for v in out]


def any_rank(flag: bool, device: torch.device | str) -> bool:
    """True on every rank when ``flag`` is true on at least one (so that all ranks take one branch)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    if _initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
