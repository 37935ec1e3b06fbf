"""A minimal distributed program for launcher tests: discover, init through DeepSpeed, collectives.

Prints one line per rank, e.g. ``SMOKE rank=1 world=2 local_rank=1 launcher=torchrun sum=3
bcast=rank0-secret gathered=[0, 10]``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from llmtrain.distributed.collectives import all_gather_object, barrier, broadcast_object, is_rank0
from llmtrain.distributed.env import discover
from llmtrain.distributed.logging import get_logger
from llmtrain.engine.deepspeed import init_process_group


def main() -> None:
    env = discover()
    init_process_group(env, device="cpu", timeout_s=60)
    t = torch.tensor([float(env.rank + 1)])
    dist.all_reduce(t)
    secret = broadcast_object(f"rank{env.rank}-secret")
    gathered = all_gather_object(env.rank * 10)
    barrier()
    get_logger("smoke").info("SMOKE-LOG rank0 only (is_rank0=%s)", is_rank0())
    print(f"SMOKE rank={dist.get_rank()} world={dist.get_world_size()} local_rank={env.local_rank} "
          f"launcher={env.launcher} sum={t.item():g} bcast={secret} gathered={gathered}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
