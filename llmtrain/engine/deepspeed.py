"""The DeepSpeed implementation of :class:`~llmtrain.engine.base.Engine` (ZeRO 0-3, offload, bf16/fp16).

This module and :mod:`llmtrain.engine.ds_config` (the generated DeepSpeed JSON) are the only places
that know DeepSpeed: process-group creation through ``deepspeed.init_distributed``, the engine and
its accumulation protocol, checkpoint files, consolidation of ZeRO-3 shards and the conversion to
DeepSpeed's universal checkpoint for another data-parallel size.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmtrain.distributed.collectives import barrier, is_rank0
from llmtrain.distributed.env import DistEnv
from llmtrain.distributed.logging import get_logger
from llmtrain.engine.base import Batch, StepReport
from llmtrain.engine.reshard import convert_for_resume
from llmtrain.engine.safe_load import RESUME_OPT_IN, restricted_torch_load
from llmtrain.errors import CheckpointError
from llmtrain.modelio.layout import UNIVERSAL_SUFFIX

log = get_logger(__name__)
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, Any]]


def init_process_group(env: DistEnv, *, device: str, timeout_s: int) -> None:
    """Create the default process group through DeepSpeed (nccl on CUDA, gloo on CPU).

    The discovered values are exported first because DeepSpeed and torch's ``env://`` read them
    from the environment, whatever launcher (srun, mpirun) actually started the process.
    """
    os.environ.update(env.as_environ())
    on_cuda = device.startswith("cuda")
    if not on_cuda:
        # DeepSpeed picks its accelerator once, at first use; on a CPU run it must be the CPU one
        # even on a machine that has a GPU.
        os.environ["DS_ACCELERATOR"] = "cpu"
        _skip_cpu_shm_op()
    if on_cuda:
        torch.cuda.set_device(env.local_rank)
    import deepspeed
    from deepspeed.accelerator import get_accelerator, set_accelerator

    if not on_cuda and get_accelerator().device_name() != "cpu":
        from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

        set_accelerator(CPU_Accelerator())
    timeout = timedelta(seconds=timeout_s)
    # DeepSpeed makes its own groups (ZeRO's data-parallel group among them) with torch's default
    # timeout (30 min), not the world group's: a rank hanging inside a gradient reduction would hold
    # the others for half an hour. Every group created from here on gets the configured timeout.
    import torch.distributed.distributed_c10d as c10d

    c10d.default_pg_timeout = timeout
    if isinstance(getattr(c10d, "default_pg_nccl_timeout", None), timedelta):
        c10d.default_pg_nccl_timeout = timeout
    deepspeed.init_distributed(dist_backend="nccl" if on_cuda else "gloo", auto_mpi_discovery=False,
                               timeout=timeout, verbose=False)


def _skip_cpu_shm_op() -> None:
    """Keep DeepSpeed from JIT-building its shared-memory allreduce op for CPU ranks.

    The build (and even loading a built op) holds a file lock in torch's extension cache; a process
    killed at that moment (preemption, OOM, kill -9) leaves the lock behind and every later run
    waits on it forever. Gloo's allreduce is all CPU training needs, and the first start gets ~35 s
    faster. Setting the entry also spares DeepSpeed's compatibility probe of every other op.
    """
    import deepspeed.ops

    deepspeed.ops.__dict__.setdefault("__compatible_ops__", {})["deepspeed_shm_comm"] = False


class LossModule(nn.Module):
    """What DeepSpeed wraps: forward(batch) -> (mean loss, tokens). Keeps the model DeepSpeed-free."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Batch) -> tuple[torch.Tensor, Any]:
        return self.loss_fn(self.model, batch)


class DeepSpeedEngine:
    """One DeepSpeed engine over ``LossModule(model, loss_fn)`` with the generated config."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, ds_config: dict[str, Any], *,
                 make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None,
                 make_scheduler: Callable[[torch.optim.Optimizer], Any], seed: int) -> None:
        import deepspeed

        self.config = ds_config
        torch.manual_seed(seed)
        module = LossModule(model, loss_fn)
        client_opt = make_optimizer(module) if make_optimizer is not None else None
        self._ds, _, _, _ = deepspeed.initialize(
            model=module, optimizer=client_opt, config=ds_config,
            model_parameters=[p for p in module.parameters() if p.requires_grad] if client_opt is None else None,
            lr_scheduler=make_scheduler)
        self._client_opt = client_opt
        self._stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
        self._fp32 = not (ds_config.get("bf16", {}).get("enabled") or ds_config.get("fp16", {}).get("enabled"))
        self.micro_steps_per_step = int(self._ds.gradient_accumulation_steps())
        self._announce_hierarchical_partitioning()

    def _announce_hierarchical_partitioning(self) -> None:
        """Name the secondary (ZeRO++ hpZ) partition group DeepSpeed actually formed, if any."""
        if int(self.config.get("zero_optimization", {}).get("zero_hpz_partition_size", 1)) <= 1:
            return
        import torch.distributed as dist
        from deepspeed.utils import groups

        group = groups._get_zero_param_intra_parallel_group()
        size = dist.get_world_size(group) if group is not None else 1
        log.info(f"[llmtrain] ZeRO++ hierarchical partitioning: a secondary parameter partition over groups of "
                 f"{size} ranks ({dist.get_world_size() // size} groups)")

    @property
    def optimizer(self) -> Any:
        """The optimizer that computes updates (ours, or DeepSpeed's when the config names one)."""
        return self._client_opt if self._client_opt is not None else self._ds.optimizer

    @property
    def deepspeed_engine(self) -> Any:
        """DeepSpeed's own engine, for tools that inspect its internals (memory benchmarks)."""
        return self._ds

    # ---- training -------------------------------------------------------------------------------
    @property
    def loss_module(self) -> nn.Module:
        return self._ds.module

    def train(self) -> None:
        self._ds.train()

    def eval(self) -> None:
        self._ds.eval()

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        loss, n = self._ds(batch)
        return loss, torch.as_tensor(n)

    def backward(self, loss: torch.Tensor) -> None:
        self._ds.backward(loss)
        if not self._ds.is_gradient_accumulation_boundary():
            self._ds.step()  # DeepSpeed counts micro steps here; the boundary step is optimizer_step

    def optimizer_step(self, *, skip: bool = False) -> StepReport:
        guard = self._client_opt if hasattr(self._client_opt, "begin_step") else None
        if guard is not None:
            # ZeRO optimizers call step() once per parameter (sub-)group: bracket them as one step
            guard.begin_step(skip=skip)
        grad_norm = self._grad_norm_unpartitioned()
        skipped_before = self._ds.skipped_steps
        lr = float(self._ds.get_lr()[0])
        self._ds.step()
        skipped = self._ds.skipped_steps > skipped_before or (guard.end_step() if guard is not None else False)
        if grad_norm is None:
            norm = self._ds.get_global_grad_norm()
            grad_norm = float(norm) if norm is not None else None
        return StepReport(skipped=bool(skipped), grad_norm=grad_norm, lr=lr)

    def _grad_norm_unpartitioned(self) -> float | None:
        """Stage 0 in fp32 has no ZeRO optimizer to report the norm; compute it before the step."""
        if self._stage != 0 or not self._fp32:
            return None
        grads = [p.grad.detach().float().norm() for p in self._ds.module.parameters() if p.grad is not None]
        return float(torch.stack(grads).norm()) if grads else 0.0

    # ---- checkpoints ----------------------------------------------------------------------------
    def save(self, run_dir: Path, tag: str) -> None:
        # the universal-checkpoint marker lets ds_to_universal convert ZeRO-1/2 checkpoints later
        self._ds.save_checkpoint(str(run_dir), tag=tag, save_latest=False, client_state={
            "universal_checkpoint_info": {"universal_checkpoint_version": 0.4}})

    # read DeepSpeed's *.pt files with full pickle (checkpoint.trust_pickle; set by build_engine)
    trust_pickle = False

    def load(self, step_dir: Path, *, reshard: bool) -> None:
        run_dir, tag = step_dir.parent, step_dir.name
        if reshard:  # converted by rank 0 while the others wait on files, never in a collective
            convert_for_resume(step_dir, trust_pickle=self.trust_pickle)
            tag = step_dir.name + UNIVERSAL_SUFFIX
        reading = contextlib.nullcontext() if self.trust_pickle else restricted_torch_load(RESUME_OPT_IN)
        try:
            with reading:
                path, _ = self._ds.load_checkpoint(str(run_dir), tag=tag, load_optimizer_states=True,
                                                   load_lr_scheduler_states=True)
        except AssertionError as e:  # DeepSpeed asserts on files it does not find or cannot match
            if reshard:  # a universal folder that cannot be loaded is not kept for the next attempt
                barrier()
                if is_rank0():
                    shutil.rmtree(run_dir / tag, ignore_errors=True)
            raise CheckpointError(
                f"DeepSpeed could not load {run_dir / tag} (AssertionError {e}); resume with the train.zero_stage "
                f"and world size the checkpoint was written with ({step_dir / 'trainer_state.json'} records them)"
            ) from e
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load {run_dir / tag}; the checkpoint is incomplete or damaged")

    def state_parts(self, *, meta: bool = False) -> Iterator[dict[str, torch.Tensor] | None]:
        """The model's state dict one part (a layer) at a time: on rank 0 its tensors, elsewhere None.

        Every rank must iterate to the end (ZeRO-3 gathers each part, a collective); rank 0 must use a
        part's tensors before asking for the next (they are released then). ``meta``: shapes and
        dtypes only (meta tensors, no gathering), to lay out the files before any data moves.
        """
        from llmtrain.engine.construction import full_shape, whole
        from llmtrain.modelio.partitioned import model_parts

        rank0 = is_rank0()
        for prefix, part in model_parts(self._ds.module.model):
            if meta:
                yield {f"{prefix}.{k}": torch.empty(full_shape(v), dtype=v.dtype, device="meta")
                       for k, v in _part_state(part).items()}
                continue
            with whole(list(part.parameters()), modifier_rank=None):
                yield {f"{prefix}.{k}": v.detach().cpu() for k, v in _part_state(part).items()} if rank0 else None

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        rank0 = is_rank0()
        if self._stage == 3:
            full = self._ds._zero3_consolidated_16bit_state_dict()  # collective: every rank calls it
            if not rank0:
                return None
            return {k.removeprefix("model."): v for k, v in full.items()}
        return self._ds.module.model.state_dict() if rank0 else None


def _part_state(part: nn.Module) -> dict[str, Any]:
    """A part's parameters and persistent buffers by name; under ZeRO-3 the parameters' full shapes
    come from DeepSpeed (``state_dict`` would report the empty placeholders)."""
    out: dict[str, Any] = dict(part.named_parameters())
    out.update({k: v for k, v in part.state_dict(keep_vars=True).items() if k not in out})
    return out


def universal_config(ds_config: dict[str, Any]) -> dict[str, Any]:
    """``ds_config`` set up to load a universal checkpoint (another data-parallel size or stage)."""
    return {**ds_config, "checkpoint": {**ds_config.get("checkpoint", {}), "load_universal": True}}
