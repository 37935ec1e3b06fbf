"""Step time at a stated MFU, and the plan rendered as the text ``llmtrain plan`` prints.

Model FLOPs per token are :func:`llmtrain.model.flops.flops_per_token` (6N + 12·L·H·Q·T, PaLM's
convention): recomputation under activation checkpointing is not model FLOPs, so its cost shows up
as a lower MFU, not as more FLOPs. Each GPU processes micro batch x accumulation x T tokens a step.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmtrain.model.config import ModelConfig
from llmtrain.model.flops import flops_per_token, num_params
from llmtrain.planning.inputs import PlanRequest
from llmtrain.planning.memory import GIB, MemoryPlan


@dataclass(frozen=True)
class StepTime:
    seconds: float
    tokens_per_step: int
    flops_per_token: float
    accumulation: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step / self.seconds


def step_time(model: ModelConfig, req: PlanRequest) -> StepTime:
    """Seconds per optimizer step when every GPU sustains ``req.mfu`` of ``req.peak_tflops``."""
    global_batch = req.global_batch or req.micro_batch * req.world_size
    accumulation = global_batch // (req.micro_batch * req.world_size)
    per_gpu_tokens = req.micro_batch * accumulation * req.seq_len
    fpt = flops_per_token(model, req.seq_len)
    seconds = per_gpu_tokens * fpt / (req.mfu * req.peak_tflops * 1e12)
    return StepTime(seconds, global_batch * req.seq_len, fpt, accumulation)


def _gib(x: float) -> str:
    return f"{x / GIB:9.2f}"


def render(model: ModelConfig, req: PlanRequest, mem: MemoryPlan, best_micro: int, t: StepTime) -> str:
    """The plan as aligned text: inputs, per-GPU parts, host per node, verdict, step time."""
    offload = req.offload if req.offload != "none" else "no offload"
    lines = [f"model {model.name}: {num_params(model):,} parameters, {model.n_layers} layers, dim {model.dim}, "
             f"vocab {model.vocab_size}",
             f"cluster: {req.nodes} node(s) x {req.gpus_per_node} GPU(s) of {req.gpu_memory_gib:g} GiB = "
             f"{req.world_size} data-parallel ranks; ZeRO-{req.zero_stage}, {offload}, {req.precision}",
             f"run: micro batch {req.micro_batch} x seq {req.seq_len}, activation checkpointing "
             f"{req.activation_checkpointing}, accumulation {t.accumulation}",
             "", "per-GPU memory (GiB)"]
    width = max(len(k) for k in mem.parts)
    lines += [f"  {k:<{width}} {_gib(v)}" for k, v in mem.parts.items()]
    lines += [f"  {'total':<{width}} {_gib(mem.total)}   of {req.gpu_memory_gib:g} GiB: "
              f"{'FITS' if mem.fits else 'DOES NOT FIT'}",
              f"host memory per node (offloaded states): {mem.host_per_node / GIB:.1f} GiB",
              f"largest micro batch that fits: {best_micro}" + ("" if best_micro else
                                                                   " (not even one sequence: raise --zero, offload, "
                                                                   "checkpoint activations or shorten --seq-len)"),
              "", f"step time at MFU {req.mfu:g} of {req.peak_tflops:g} TFLOP/s per GPU: {t.seconds:.2f} s "
                  f"({t.tokens_per_step:,} tokens/step, {t.tokens_per_second:,.0f} tokens/s, "
                  f"{t.flops_per_token / 1e9:.1f} GFLOP/token)"]
    return "\n".join(lines)
