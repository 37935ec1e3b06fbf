"""Build a model the way `llmtrain train` does at ZeRO-3 and report per-rank memory and weight statistics.

Run under torchrun with ``CONSTRUCTION_OUT=<dir>``; every rank writes ``rank<R>.json`` with the peak
resident-memory increase during construction (sampled every millisecond from /proc/self/statm), the
bytes of its own partitions, and (rank 0) per-tensor statistics and equality with a whole-model
construction under the same seed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import torch

from llmtrain.config.loader import load_run_config
from llmtrain.config.roots import PretrainRunConfig
from llmtrain.distributed.env import discover
from llmtrain.engine import init_process_group
from llmtrain.engine.construction import full_shape, is_partitioned, whole
from llmtrain.model.transformer import Transformer
from llmtrain.modelio.load import load_model
from llmtrain.modelio.partitioned import model_parts
from llmtrain.training.runtime import model_construction, model_partitioning

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRss:
    """The highest resident set size seen while the block runs (a 1 ms sampling thread)."""

    def __enter__(self) -> PeakRss:
        self.base, self.peak, self._stop = rss(), rss(), False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, rss())


def main() -> None:
    out = Path(os.environ["CONSTRUCTION_OUT"])
    cfg = load_run_config(None, sys.argv[1:], root=PretrainRunConfig)
    env = discover()
    init_process_group(env, device="cpu", timeout_s=120)
    device = torch.device("cpu")
    torch.manual_seed(cfg.train.seed)
    init = os.environ.get("CONSTRUCTION_INIT")  # fine-tuning: load these weights into the partitions
    with PeakRss() as mem:
        if init:
            model = load_model(init, partitioning=model_partitioning(cfg, env, device)).model
        else:
            with model_construction(cfg, env, device):
                model = Transformer(cfg.model.architecture())
    own = sum(p.ds_tensor.numel() * p.ds_tensor.element_size() if is_partitioned(p) else p.numel() * p.element_size()
              for p in model.parameters())
    largest = max(sum(math.prod(full_shape(p)) * p.element_size() for p in part.parameters())
                  for _, part in model_parts(model))
    report = {"largest_part_bytes": largest, "rank": env.rank, "world": env.world_size, "peak_increase": mem.peak - mem.base, "own_bytes": own,
              "all_partitioned": all(is_partitioned(p) for p in model.parameters())}
    reference = None
    if env.rank == 0:
        torch.manual_seed(cfg.train.seed)
        with PeakRss() as whole_mem:
            reference = dict((load_model(init).model if init else Transformer(cfg.model.architecture())).named_parameters())
        report["whole_peak_increase"] = whole_mem.peak - whole_mem.base
        report["full_bytes"] = sum(p.numel() * p.element_size() for p in reference.values())
    stats, equal = {}, True
    for name, p in model.named_parameters():
        with whole([p], modifier_rank=None):
            if env.rank == 0:
                t = p.data.detach().float()
                stats[name] = {"std": float(t.std()), "mean": float(t.mean()), "shape": list(t.shape)}
                equal = equal and torch.equal(p.data, reference[name].data)
    if env.rank == 0:
        cfg_m = cfg.model
        report.update(stats=stats, equal_to_whole_construction=equal, init_std=cfg_m.init_std,
                      out_std=cfg_m.init_std / math.sqrt(2 * cfg_m.n_layers))
    (out / f"rank{env.rank}.json").write_text(json.dumps(report))
    torch.distributed.barrier()  # no rank leaves while another still uses the process group
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
