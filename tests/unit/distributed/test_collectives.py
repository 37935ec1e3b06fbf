"""Collective helpers: rank 0 of one without a process group; over gloo, one collective for many scalars."""

from __future__ import annotations

import multiprocessing as mp

import torch
import torch.distributed as dist

from llmtrain.distributed import collectives as C


def test_helpers_without_process_group(monkeypatch):
    for k in ("RANK", "SLURM_STEP_ID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(k, raising=False)
    obj = {"a": [1, 2]}
    assert C.is_rank0() and C.rank() == 0 and C.world_size() == 1
    assert C.broadcast_object(obj) is obj
    assert C.all_gather_object(obj) == [obj]
    C.barrier()
    assert C.all_reduce_mean(2.5, "cpu") == 2.5
    assert C.all_reduce_mean([1.0, 3.0], "cpu") == [1.0, 3.0]
    assert C.any_rank(True, "cpu") and not C.any_rank(False, "cpu")


def _worker(rank: int, init_file: str, out) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    calls = []
    real = dist.all_reduce
    dist.all_reduce = lambda t, *a, **k: calls.append(t.numel()) or real(t, *a, **k)  # type: ignore[assignment]
    try:
        means = C.all_reduce_mean([float(rank + 1), 10.0 * rank, 2**40 + rank], torch.device("cpu"))
        one_collective = calls == [3]
        single = C.all_reduce_mean(float(rank), "cpu")
        anyr = (C.any_rank(rank == 1, "cpu"), C.any_rank(False, "cpu"))
        out.put((rank, means, one_collective, single, anyr, C.broadcast_object(f"r{rank}"),
                 C.all_gather_object(rank * 10), C.rank(), C.world_size()))
        C.barrier()
    finally:
        dist.all_reduce = real  # type: ignore[assignment]
        dist.destroy_process_group()


def test_collectives_over_two_gloo_ranks(tmp_path):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, str(tmp_path / "init"), out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank, means, one_collective, single, anyr, bcast, gathered, r, world in results:
        assert means == [1.5, 5.0, 2**40 + 0.5] and one_collective  # three scalars, one all-reduce, float64
        assert single == 0.5 and anyr == (True, False)
        assert bcast == "r0" and gathered == [0, 10] and (r, world) == (rank, 2)
