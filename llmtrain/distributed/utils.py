"""Small collective helpers so that distributed code reads like single-process code.

Every helper also works without a process group (a single process, or before initialisation):
then it behaves as rank 0 of a world of one.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TypeVar

import torch.distributed as dist

from llmtrain.distributed.env import process_rank

T = TypeVar("T")

_LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"


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


class _Rank0Filter(logging.Filter):
    """Drop records on ranks other than 0, decided at emit time (the rank may be known only later)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(getattr(record, "all_ranks", False)) or is_rank0()


def get_logger(name: str) -> logging.Logger:
    """A logger that prints on rank 0 only; pass ``extra={"all_ranks": True}`` to log from every rank.

    The first call installs one stderr handler on the ``llmtrain`` logger (unless the application
    configured one), so that messages show without any logging set-up.
    """
    root = logging.getLogger("llmtrain")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT, datefmt="%H:%M:%S"))
        handler.addFilter(_Rank0Filter())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    logger = logging.getLogger(name if name == "llmtrain" or name.startswith("llmtrain.") else f"llmtrain.{name}")
    # On the logger too, so that handlers an application adds to the root logger see rank 0 only.
    if not any(isinstance(f, _Rank0Filter) for f in logger.filters):
        logger.addFilter(_Rank0Filter())
    return logger
