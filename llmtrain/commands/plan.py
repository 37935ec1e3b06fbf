"""`llmtrain plan`: will a model x cluster x ZeRO stage x batch shape fit, and how long is a step."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="predict per-GPU memory, host memory, the largest micro batch and step time",
                       description="Predict, without building the model, per-GPU memory by part (parameters, "
                                   "gradients, optimizer states, buffers, activations, loss), host memory per node "
                                   "under offload, whether it fits, the largest micro batch that fits, and the step "
                                   "time at a stated MFU. Formulas and what was measured: docs/scaling.md.")
    p.add_argument("--model", required=True, help="preset name (configs/model/), model or run-config YAML, "
                                                   "Hugging Face directory (config.json) or llmtrain model directory")
    p.add_argument("--nodes", type=int, required=True, help="number of nodes")
    p.add_argument("--gpus-per-node", type=int, required=True, help="GPUs per node")
    p.add_argument("--gpu-memory", type=float, required=True, help="memory of one GPU in GiB (e.g. 80)")
    p.add_argument("--zero", type=int, required=True, help="DeepSpeed ZeRO stage 0-3")
    p.add_argument("--offload", default="none", help="none (default), optimizer, params (ZeRO-3) or both")
    p.add_argument("--micro-batch", type=int, required=True, help="sequences per GPU per micro step")
    p.add_argument("--seq-len", type=int, required=True, help="tokens per sequence")
    p.add_argument("--global-batch", type=int, default=None,
                   help="sequences per optimizer step (default: micro batch x GPUs, no accumulation)")
    p.add_argument("--precision", default="bf16", help="bf16 (default) or fp32")
    p.add_argument("--activation-checkpointing", default=None,
                   help="none, selective or full (default: the model YAML's setting, else none)")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilization to assume (default 0.4)")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="peak dense TFLOP/s of one GPU at this precision (default 989: H100 SXM bf16)")
    p.add_argument("--reserve", type=float, default=2.0,
                   help="GiB per GPU kept for the CUDA context and allocator fragmentation (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmtrain.planning.inputs import PlanRequest, resolve_model
    from llmtrain.planning.memory import largest_micro_batch, plan_memory
    from llmtrain.planning.step_time import render, step_time

    model, yaml_checkpointing = resolve_model(args.model)
    req = PlanRequest(nodes=args.nodes, gpus_per_node=args.gpus_per_node, gpu_memory_gib=args.gpu_memory,
                      zero_stage=args.zero, micro_batch=args.micro_batch, seq_len=args.seq_len,
                      offload=args.offload, precision=args.precision,
                      activation_checkpointing=args.activation_checkpointing or yaml_checkpointing or "none",
                      mfu=args.mfu, peak_tflops=args.peak_tflops, global_batch=args.global_batch,
                      reserve_gib=args.reserve)
    req.check()
    mem = plan_memory(model, req)
    print(render(model, req, mem, largest_micro_batch(model, req), step_time(model, req)))
    return 0
