"""Collective helpers without a process group behave as rank 0 of one; the logger is rank-0 only."""

from __future__ import annotations

import logging

from llmtrain.distributed import utils


def test_helpers_without_process_group(monkeypatch):
    for k in ("RANK", "SLURM_STEP_ID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(k, raising=False)
    obj = {"a": [1, 2]}
    assert utils.is_rank0() and utils.world_size() == 1
    assert utils.broadcast_object(obj) is obj
    assert utils.all_gather_object(obj) == [obj]
    utils.barrier()


def _emitted(monkeypatch, rank: str, **extra) -> list[str]:
    monkeypatch.setenv("RANK", rank)
    log = utils.get_logger("unit_test_logger")
    root = logging.getLogger("llmtrain")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep()
    keep.addFilter(utils._Rank0Filter())
    root.addHandler(keep)
    try:
        log.info("hello %d", 7, **extra)
    finally:
        root.removeHandler(keep)
    return seen


def test_logger_prints_on_rank0_only(monkeypatch):
    assert utils.get_logger("x").name == "llmtrain.x" and utils.get_logger("llmtrain.data").name == "llmtrain.data"
    assert _emitted(monkeypatch, "0") == ["hello 7"]
    assert _emitted(monkeypatch, "1") == []
    assert _emitted(monkeypatch, "1", extra={"all_ranks": True}) == ["hello 7"]
