"""Measure per-rank model-state bytes of real 2-rank CPU DeepSpeed engines (gloo), for the planner tests.

Reuses benchmarks/bench_memory_zero.py's ``measure`` (storages of parameters, gradients and optimizer
states, counted once each) and builds each engine as ``llmtrain train`` does, adding optimizer
offload, which the benchmark does not vary. ``python tests/unit/planning/zero_measure.py`` prints the
whole matrix (ZeRO 0-3 x bf16/fp32 x offload) beside the planner's predictions.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[3]
DIM, LAYERS, VOCAB, HEADS, SEQ, BUCKET = 256, 4, 4096, 4, 32, 2e5
ALL_CASES = [(s, p, off) for p in ("bf16", "fp32") for s in range(4) for off in ((False, True) if s else (False,))]


def run_config(stage: int, precision: str, offload: bool) -> dict[str, Any]:
    zero = {"reduce_bucket_size": BUCKET, "allgather_bucket_size": BUCKET}
    if stage == 3:
        zero.update(stage3_prefetch_bucket_size=BUCKET, stage3_max_live_parameters=BUCKET)
    return {"model": {"vocab_size": VOCAB, "dim": DIM, "n_layers": LAYERS, "n_heads": HEADS, "max_seq_len": 64,
                      "attention_backend": "sdpa"},
            "train": {"run_name": f"zero{stage}", "seq_len": SEQ, "micro_batch_size": 1, "global_batch_size": 2,
                      "max_steps": 2, "precision": precision, "zero_stage": stage, "device": "cpu",
                      "offload_optimizer": offload},
            "checkpoint": {"dir": tempfile.mkdtemp(prefix="plan_mem_"), "resume": "never"},
            "logging": {"tensorboard": False, "jsonl": False, "plot": False},
            "deepspeed": {"zero_optimization": zero}}


def _rank(rank: int, cases: list[tuple[int, str, bool]], port: int, results: Any) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    from bench_gpu import RandomTokenLoader
    from bench_memory_zero import measure

    from llmtrain.config.base import build
    from llmtrain.config.roots import PretrainRunConfig
    from llmtrain.model.runtime import apply_runtime
    from llmtrain.model.transformer import Transformer
    from llmtrain.objectives.losses import causal_lm_loss
    from llmtrain.training.loop import Trainer
    from llmtrain.training.runtime import start
    from llmtrain.training.task import TrainingTask

    out = []
    for stage, precision, offload in cases:
        cfg = build(PretrainRunConfig, run_config(stage, precision, offload))
        env, device = start(cfg)
        torch.manual_seed(0)
        model = apply_runtime(Transformer(cfg.model.architecture()), cfg.model.runtime())
        loader = RandomTokenLoader(VOCAB, SEQ, 1)
        loader.position = rank * 1000
        trainer = Trainer(cfg, TrainingTask(model, cfg.model.architecture(), causal_lm_loss, loader, SEQ), env, device)
        engine = trainer.engine.deepspeed_engine
        for step in range(2):  # one full step (Adam's moments exist), then gradients held
            loss, _ = engine(loader.next_batch())
            engine.backward(loss)
            if step == 0:
                engine.step()
        out.append(((stage, precision, offload), measure(engine, stage)))
        trainer.metrics.close()
        del trainer, engine
    results[rank] = out


def measure_cases(cases: list[tuple[int, str, bool]]) -> dict[tuple[int, str, bool], list[dict[str, int]]]:
    """(stage, precision, offload) -> each rank's measured {params, grads, optimizer} bytes."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(cases, port, results), nprocs=2, join=True)
    merged: dict[tuple[int, str, bool], list[dict[str, int]]] = {}
    for rank in sorted(results.keys()):
        for case, row in results[rank]:
            merged.setdefault(case, []).append(row)
    return merged


def predicted(stage: int, precision: str, offload: bool) -> float:
    """The planner's params + gradients + optimizer states + reduce bucket, device and host, per rank."""
    from llmtrain.config.base import build
    from llmtrain.config.roots import PretrainRunConfig
    from llmtrain.engine.ds_config import build_ds_config
    from llmtrain.model.flops import num_params
    from llmtrain.planning.memory import buffer_bytes, model_state_bytes

    cfg = build(PretrainRunConfig, run_config(stage, precision, offload))
    e = 2 if precision == "bf16" else 4
    states, host = model_state_bytes(num_params(cfg.model), stage, 2, e, offload_optimizer=offload)
    ds = build_ds_config(cfg, 2, on_gpu=False)  # as on these CPU ranks (no overlap_comm)
    return sum(states.values()) + host + buffer_bytes(cfg.model.architecture(), stage, e, ds)["reduce buckets"]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    rows = measure_cases(ALL_CASES)
    print(f"{'stage':>5} {'prec':>5} {'offload':>7} | {'measured MiB (per rank)':>24} | {'predicted':>9} | error")
    for (stage, precision, offload), ranks in rows.items():
        meas = [sum(r.values()) / 2**20 for r in ranks]
        pred = predicted(stage, precision, offload) / 2**20
        worst = max(abs(pred - m) / m for m in meas)
        print(f"{stage:>5} {precision:>5} {str(offload):>7} | {' / '.join(f'{m:.2f}' for m in meas):>24} | "
              f"{pred:>9.2f} | {100 * worst:.1f}%")
