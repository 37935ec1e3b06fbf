"""Data-loader overhead per training step, as a share of the step time, on this machine's CPU.

Times `PretrainLoader.next_batch` (memory-mapped shards, blend index, packing, document ids) for
the micro-batches of one optimizer step, and the forward + backward + AdamW step of the model on
those batches, side by side in one process. Prints both and the loader's share.

    llmtrain prepare --config configs/data/starter.yaml
    python benchmarks/bench_loader.py --data-config configs/data/starter.yaml --preset tiny
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml

from llmtrain.config.base import build
from llmtrain.config.schema import ModelSection, OptimConfig
from llmtrain.data.loader import PretrainLoader, describe_data
from llmtrain.model.runtime import ModelRuntime, apply_runtime
from llmtrain.model.transformer import Transformer
from llmtrain.objectives.losses import causal_lm_loss
from llmtrain.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-config", default="configs/data/starter.yaml", help="a prepared data config")
    p.add_argument("--preset", default="tiny", help="model preset (configs/model/*.yaml)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--accumulation", type=int, default=2, help="micro-batches per optimizer step")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = describe_data(args.data_config)
    preset = build(ModelSection, yaml.safe_load((ROOT / "configs" / "model" / f"{args.preset}.yaml").read_text()))
    cfg = preset.architecture()
    cfg.vocab_size = max(cfg.vocab_size, info["vocab_size"])
    g = args.micro_batch * args.accumulation
    loader = PretrainLoader(args.data_config, split="train", seq_len=args.seq_len, micro_batch_size=args.micro_batch,
                            global_batch_size=g, dp_rank=0, dp_size=1, seed=1)
    torch.manual_seed(0)
    model = apply_runtime(Transformer(cfg), ModelRuntime(attention_backend="sdpa"))
    opt = build_optimizer(model, OptimConfig(lr=1e-3))
    load_t, step_t = [], []
    for step in range(args.steps + 2):
        t0 = time.perf_counter()
        batches = [loader.next_batch() for _ in range(args.accumulation)]
        t1 = time.perf_counter()
        for b in batches:
            loss, _ = causal_lm_loss(model, b)
            (loss / args.accumulation).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if step >= 2:  # warm-up: page cache, allocator
            load_t.append(t1 - t0)
            step_t.append(t2 - t1)
    lm, sm = statistics.median(load_t) * 1000, statistics.median(step_t) * 1000
    print(f"preset {args.preset}, {args.accumulation} x {args.micro_batch} x {args.seq_len} tokens per step, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"loader   {lm:9.2f} ms/step (median of {args.steps})")
    print(f"compute  {sm:9.2f} ms/step (forward + backward + AdamW)")
    print(f"loader share of the step: {lm / (lm + sm) * 100:.2f}%")


if __name__ == "__main__":
    main()
