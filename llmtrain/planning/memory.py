"""Per-GPU and per-node memory of a training run, part by part (formulas: docs/scaling.md).

Notation: Psi parameters, N data-parallel ranks (every GPU), e bytes per element of the compute
precision (bf16 2, fp32 4). Model states follow what DeepSpeed does with our AdamW, as measured on
CPU by benchmarks/bench_memory_zero.py (the ZeRO paper's accounting, K = 12 for the fp32 master
copy and Adam's two moments): parameters e*Psi (ZeRO-3: /N), gradients e*Psi (ZeRO-2/3: /N),
optimizer states 12*Psi (ZeRO-1+: /N; fp32 at ZeRO-0: 8*Psi, no master copy). Offloading moves the optimizer states and an fp32 gradient
partition (4*Psi/N) to host memory, parameter offload the parameter partitions. Temporary buffers
are read from the DeepSpeed config ``llmtrain train`` would generate (bucket sizes, ZeRO-3 live
parameters), activations and loss buffers from the model's shapes and llmtrain's own layers and
cross-entropy (llmtrain/objectives/losses.py). Peak memory is taken at the end of the forward pass,
when every saved activation and the loss's buffers are alive together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llmtrain.model.config import ModelConfig
from llmtrain.model.flops import block_params, num_params
from llmtrain.planning.inputs import PlanRequest

GIB = 2**30
ADAM_STATE_BYTES = 12  # fp32 master weights + exp_avg + exp_avg_sq, per parameter
FP32_GRAD_BYTES = 4  # the fp32 gradient partition DeepSpeed keeps beside offloaded optimizer states
LOSS_CHUNK_TOKENS = 4096  # llmtrain.objectives.losses.DEFAULT_CHUNK_TOKENS (not imported: that pulls in torch)
DS_DEFAULTS = {"stage3_prefetch_bucket_size": 5e7, "stage3_max_live_parameters": 1e9,
               "stage3_param_persistence_threshold": 1e5, "reduce_bucket_size": 5e8, "overlap_comm": False}


@dataclass
class MemoryPlan:
    """Bytes per GPU by part, host bytes per node, and the verdict."""

    parts: dict[str, float]
    host_per_node: float
    usable: float

    @property
    def model_states(self) -> float:
        """Parameters + gradients + optimizer states + reduce buckets (what the CPU benchmark measures)."""
        return sum(self.parts[k] for k in ("parameters", "gradients", "optimizer states", "reduce buckets"))

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.total <= self.usable


def generated_ds_config(model: ModelConfig, req: PlanRequest) -> dict[str, Any]:
    """The DeepSpeed JSON ``llmtrain train`` would write for this shape (GPU, our AdamW)."""
    from llmtrain.config.base import build
    from llmtrain.config.roots import PretrainRunConfig
    from llmtrain.engine.ds_config import build_ds_config

    micro_world = req.micro_batch * req.world_size
    cfg = build(PretrainRunConfig, {
        "model": model.architecture_dict() | {"max_seq_len": max(model.max_seq_len, req.seq_len)},
        "train": {"seq_len": req.seq_len, "micro_batch_size": req.micro_batch,
                  "global_batch_size": req.global_batch or micro_world, "precision": req.precision,
                  "zero_stage": req.zero_stage, "offload_optimizer": req.offload_optimizer,
                  "offload_params": req.offload_params}})
    return build_ds_config(cfg, req.world_size, on_gpu=True)


def model_state_bytes(psi: int, stage: int, n: int, e: int, offload_optimizer: bool = False,
                      offload_params: bool = False) -> tuple[dict[str, float], float]:
    """(device bytes per rank of parameters, gradients, optimizer states; host bytes per rank)."""
    params = e * psi / (n if stage == 3 else 1)
    grads = e * psi / (n if stage >= 2 else 1)
    # ZeRO-0 in fp32 runs our AdamW on the parameters themselves: no master copy, only the two moments
    optim = (ADAM_STATE_BYTES if stage >= 1 or e == 2 else 8) * psi / (n if stage >= 1 else 1)
    host = 0.0
    if offload_optimizer:
        host += optim + FP32_GRAD_BYTES * psi / n
        optim = 0.0
    if offload_params:
        host += params
        params = 0.0
    return {"parameters": params, "gradients": grads, "optimizer states": optim}, host


def buffer_bytes(model: ModelConfig, stage: int, e: int, ds: dict[str, Any]) -> dict[str, float]:
    """Reduce buckets, and at ZeRO-3 the gathered parameters (working set + persistent small ones)."""
    z = {**DS_DEFAULTS, **ds.get("zero_optimization", {})}
    out = {"reduce buckets": 0.0, "gathered parameters": 0.0}
    if stage >= 1:  # the contiguous gradient bucket; overlap_comm double-buffers it
        out["reduce buckets"] = float(z["reduce_bucket_size"]) * e * (2 if z["overlap_comm"] else 1)
    if stage == 3:
        largest = max(block_params(model), model.vocab_size * model.dim)
        live = max(largest, min(float(z["stage3_max_live_parameters"]), largest + float(z["stage3_prefetch_bucket_size"])))
        small = model.n_layers * 2 * model.dim + model.dim  # norms under the persistence threshold stay whole
        if model.qk_norm:
            small += model.n_layers * 2 * model.head_size
        if model.dim >= float(z["stage3_param_persistence_threshold"]):
            small = 0
        out["gathered parameters"] = (live + small) * e
    return out


def activation_bytes(model: ModelConfig, micro_batch: int, seq_len: int, e: int, checkpointing: str) -> float:
    """Saved activations of one micro batch (flash-style attention: no T x T scores are kept).

    Per token and block: attention 2h (norm in/out) + 3q + 3kv (q/k/v projections, RoPE'd q/k,
    attention output), SwiGLU 2h + 4f (norm in/out, w1, w3, silu(w1), their product). A checkpointed
    block keeps only its input (h) and recomputes one block at a time in backward.
    """
    h, f = model.dim, model.hidden_dim
    q, kv = model.n_heads * model.head_size, model.kv_heads * model.head_size
    tokens = micro_batch * seq_len
    full = tokens * (4 * h + 3 * q + 3 * kv + 4 * f) * e
    kept = tokens * h * e
    n_ckpt = {"none": 0, "selective": math.ceil(model.n_layers / 2), "full": model.n_layers}[checkpointing]
    blocks = n_ckpt * kept + (model.n_layers - n_ckpt) * full + (full if n_ckpt else 0)
    return blocks + 3 * tokens * h * e  # embedding output, final norm input and output


def loss_bytes(model: ModelConfig, micro_batch: int, seq_len: int, e: int, sharded_output: bool) -> float:
    """The cross-entropy's buffers at their peak (llmtrain.objectives.losses, CUDA paths).

    Unsharded output weight: the fused linear-cross-entropy keeps d hidden (tokens x h) and d W
    (V x h) for backward and, while running, an fp32 d W and one chunk of logits (fp32 + two
    compute-dtype copies). ZeRO-3 (sharded weight): each chunk calls the output module, and
    cross-entropy keeps its fp32 log-softmax for backward, so all tokens x V fp32 stay alive.
    """
    tokens = micro_batch * seq_len
    v, h = model.vocab_size, model.dim
    chunk = min(tokens, LOSS_CHUNK_TOKENS) * v
    if sharded_output:
        return tokens * v * 4 + chunk * (e + 4)
    return tokens * h * e + v * h * e + v * h * 4 + chunk * (4 + 2 * e)


def plan_memory(model: ModelConfig, req: PlanRequest, micro_batch: int | None = None,
                ds: dict[str, Any] | None = None) -> MemoryPlan:
    """Memory per GPU (by part) and per node for ``req`` (``micro_batch`` overrides the request's)."""
    b = micro_batch or req.micro_batch
    e = 2 if req.precision == "bf16" else 4
    psi = num_params(model)
    states, host = model_state_bytes(psi, req.zero_stage, req.world_size, e, req.offload_optimizer, req.offload_params)
    ds = ds if ds is not None else generated_ds_config(model, req)
    parts = {**states, **buffer_bytes(model, req.zero_stage, e, ds),
             "activations": activation_bytes(model, b, req.seq_len, e, req.activation_checkpointing),
             "loss buffers": loss_bytes(model, b, req.seq_len, e, sharded_output=req.zero_stage == 3),
             "reserved (CUDA context, allocator)": req.reserve_gib * GIB}
    return MemoryPlan(parts, host * req.gpus_per_node, req.gpu_memory_gib * GIB)


def largest_micro_batch(model: ModelConfig, req: PlanRequest, limit: int = 1 << 16) -> int:
    """The largest micro batch whose plan fits (0 when not even one sequence fits)."""
    ds = generated_ds_config(model, req)
    if not plan_memory(model, req, 1, ds).fits:
        return 0
    lo, hi = 1, 2
    while hi <= limit and plan_memory(model, req, hi, ds).fits:
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:  # lo fits, hi does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if plan_memory(model, req, mid, ds).fits else (lo, mid)
    return lo
