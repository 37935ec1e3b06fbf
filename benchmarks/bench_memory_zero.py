"""Per-rank bytes of parameters, gradients and optimizer states at ZeRO 0-3, beside the ZeRO paper.

Starts ``--ranks`` CPU processes (gloo) itself. On each, for every stage, it builds the engine exactly
as ``llmtrain train`` does (:class:`~llmtrain.training.loop.Trainer`: generated DeepSpeed config,
our AdamW, bf16), runs one full step (so Adam's moments exist) and the forward/backward of a second
one, and then, with gradients held, sums the bytes of the engine's tensors by what they are:

* parameters: the storages behind the module's parameters (ZeRO-3: their ``ds_tensor`` partitions);
* optimizer states: the inner optimizer's parameters (the fp32 master copy) and its state tensors
  (``exp_avg``, ``exp_avg_sq``);
* gradients: every other floating-point storage held by the DeepSpeed optimizer (gradient partitions,
  reduction buckets) plus ``.grad`` of the module parameters.

Storages are counted once each at their full size, so padding and flat buffers are included.
The reference is Rajbhandari et al. 2020 (ZeRO), mixed-precision Adam with Psi parameters and N
ranks: stage 0 2Psi + 2Psi + 12Psi, stage 1 2Psi + 2Psi + 12Psi/N, stage 2 2Psi + (2Psi + 12Psi)/N,
stage 3 (2Psi + 2Psi + 12Psi)/N.

    python benchmarks/bench_memory_zero.py [--ranks 2 --dim 256 --layers 4 --stages 0,1,2,3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", type=int, default=2, help="data-parallel CPU processes")
    p.add_argument("--stages", default="0,1,2,3", help="ZeRO stages to measure")
    p.add_argument("--dim", type=int, default=256, help="hidden size of the measured model")
    p.add_argument("--layers", type=int, default=4, help="transformer blocks")
    p.add_argument("--vocab", type=int, default=4096, help="vocabulary size")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"), help="training precision")
    p.add_argument("--bucket", type=float, default=2e5,
                   help="DeepSpeed reduce/allgather bucket elements (small, so buffers do not dwarf a small model)")
    p.add_argument("--out", default=os.environ.get("OUT", "bench_out"), help="folder for bench_memory_zero.json")
    return p.parse_args(argv)


def paper_bytes(stage: int, psi: int, n: int) -> dict[str, float]:
    """ZeRO paper's per-rank bytes for mixed-precision Adam (K = 12)."""
    params, grads, opt = 2.0 * psi, 2.0 * psi, 12.0 * psi
    if stage >= 1:
        opt /= n
    if stage >= 2:
        grads /= n
    if stage >= 3:
        params /= n
    return {"params": params, "grads": grads, "optimizer": opt}


def _walk_tensors(obj: Any, depth: int, seen: set[int], out: list[torch.Tensor]) -> None:
    if depth < 0 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _walk_tensors(v, depth - 1, seen, out)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            _walk_tensors(v, depth - 1, seen, out)
    elif hasattr(obj, "__dict__") and not isinstance(obj, (torch.nn.Module, type)) and depth > 0:
        for v in vars(obj).values():
            _walk_tensors(v, depth - 1, seen, out)


def _storages(tensors) -> dict[int, int]:
    """data_ptr of each distinct non-empty storage -> its bytes."""
    out: dict[int, int] = {}
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor) or not t.is_floating_point():
            continue
        st = t.untyped_storage()
        if st.nbytes():
            out[st.data_ptr()] = st.nbytes()
    return out


MASTER_ATTRS = ("fp32_partitioned_groups_flat", "single_partition_of_fp32_groups", "fp32_groups_flat_partition",
                "fp32_groups")


def measure(engine, stage: int) -> dict[str, int]:
    module_params = list(engine.module.parameters())
    if stage == 3:
        param_tensors = [getattr(p, "ds_tensor", p) for p in module_params]
    else:
        param_tensors = module_params
    params = _storages(param_tensors)
    ds_opt = engine.optimizer
    inner = getattr(ds_opt, "optimizer", ds_opt)
    opt_tensors = [p for g in inner.param_groups for p in g["params"]]
    # the fp32 master copy; ZeRO-3 detaches it from the inner optimizer between steps
    for name in MASTER_ATTRS:
        opt_tensors += [t for t in getattr(ds_opt, name, None) or [] if isinstance(t, torch.Tensor)]
    opt_tensors += [v for st in inner.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    optimizer = {k: v for k, v in _storages(opt_tensors).items() if k not in params}
    held: list[torch.Tensor] = []
    _walk_tensors(ds_opt, depth=4, seen={id(inner)}, out=held)
    held += [p.grad for p in module_params] + [p.grad for p in opt_tensors if isinstance(p, torch.Tensor)]
    grads = {k: v for k, v in _storages(held).items() if k not in params and k not in optimizer}
    return {"params": sum(params.values()), "grads": sum(grads.values()), "optimizer": sum(optimizer.values())}


def rank_main(rank: int, args: argparse.Namespace, port: int, results: Any) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(args.ranks), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(args.ranks), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import tempfile

    from bench_gpu import RandomTokenLoader

    from llmtrain.config.base import build
    from llmtrain.config.roots import PretrainRunConfig
    from llmtrain.model.flops import num_params
    from llmtrain.model.runtime import apply_runtime
    from llmtrain.model.transformer import Transformer
    from llmtrain.objectives.losses import causal_lm_loss
    from llmtrain.training.loop import Trainer
    from llmtrain.training.runtime import start
    from llmtrain.training.task import TrainingTask

    rows = []
    for stage in [int(s) for s in args.stages.split(",")]:
        cfg = build(PretrainRunConfig, {
            "model": {"vocab_size": args.vocab, "dim": args.dim, "n_layers": args.layers, "n_heads": 4,
                      "max_seq_len": 64, "attention_backend": "sdpa"},
            "train": {"run_name": f"zero{stage}", "seq_len": 32, "micro_batch_size": 1, "global_batch_size": args.ranks,
                      "max_steps": 2, "precision": args.precision, "zero_stage": stage, "device": "cpu"},
            "checkpoint": {"dir": tempfile.mkdtemp(prefix="zero_mem_"), "resume": "never"},
            "logging": {"tensorboard": False, "jsonl": False, "plot": False},
            "deepspeed": {"zero_optimization": {"reduce_bucket_size": args.bucket, "allgather_bucket_size": args.bucket,
                                                **({"stage3_prefetch_bucket_size": args.bucket,
                                                    "stage3_max_live_parameters": args.bucket} if stage == 3 else {})}},
        })
        env, device = start(cfg)
        torch.manual_seed(0)
        model = apply_runtime(Transformer(cfg.model.architecture()), cfg.model.runtime())
        loader = RandomTokenLoader(args.vocab, 32, 1)
        loader.position = rank * 1000
        trainer = Trainer(cfg, TrainingTask(model, cfg.model.architecture(), causal_lm_loss, loader, 32), env, device)
        engine = trainer.engine.deepspeed_engine
        for step in range(2):
            loss, _ = engine(loader.next_batch())
            engine.backward(loss)
            if step == 0:
                engine.step()
        row = {"stage": stage, "rank": rank, "psi": num_params(cfg.model), **measure(engine, stage),
               "optimizer_class": type(engine.optimizer).__name__}
        rows.append(row)
        trainer.metrics.close()
        del trainer, engine
    results[rank] = rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(rank_main, args=(args, port, results), nprocs=args.ranks, join=True)
    rows = [r for rank in sorted(results.keys()) for r in results[rank]]
    mib = 2**20
    print(f"\nper-rank bytes, {args.ranks} ranks, {args.precision}, Psi = {rows[0]['psi']:,} parameters "
          f"(MiB; paper = ZeRO mixed-precision Adam, 2Psi + 2Psi + 12Psi partitioned per stage)")
    head = (f"{'stage':>5} {'rank':>4} | {'params':>7} {'paper':>7} | {'grads':>7} {'paper':>7} | "
            f"{'optim':>7} {'paper':>7} | {'total':>7} {'paper':>7} | DeepSpeed optimizer")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        ref = paper_bytes(r["stage"], r["psi"], args.ranks)
        total, ref_total = r["params"] + r["grads"] + r["optimizer"], sum(ref.values())
        print(f"{r['stage']:>5} {r['rank']:>4} | {r['params'] / mib:>7.2f} {ref['params'] / mib:>7.2f} | "
              f"{r['grads'] / mib:>7.2f} {ref['grads'] / mib:>7.2f} | {r['optimizer'] / mib:>7.2f} "
              f"{ref['optimizer'] / mib:>7.2f} | {total / mib:>7.2f} {ref_total / mib:>7.2f} | {r['optimizer_class']}")
        r["paper"] = ref
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_memory_zero.json").write_text(json.dumps(rows, indent=2))
    print(f"\nresults: {out / 'bench_memory_zero.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
