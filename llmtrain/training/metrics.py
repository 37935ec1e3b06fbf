"""Training metrics: throughput, MFU, memory; logged to the console, JSONL, TensorBoard and a PNG.

MFU = achieved model FLOP/s / peak bf16 FLOP/s, with model FLOPs per token from
:func:`llmtrain.model.flops.flops_per_token` (6N plus the attention term, see docs/model.md).
Throughput and MFU count the tokens the model reads (:func:`real_tokens`): padding of fine-tuning
batches is not work done.
Only rank 0 writes; the other ranks' logger is a no-op, so the loop calls it unconditionally.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch

from llmtrain.distributed.logging import get_logger

log = get_logger(__name__)

# Dense bf16 peak TFLOP/s per device (no sparsity), matched on the CUDA device name.
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0,
    "A100": 312.0, "A10G": 125.0, "L40S": 362.0, "L4": 121.0, "4090": 165.0, "3090": 71.0, "V100": 125.0,
}


def peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    """Peak bf16 TFLOP/s of ``device`` (None on CPU or an unknown GPU unless overridden)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def memory_gib(device: torch.device) -> float:
    """Peak memory of this process: CUDA max allocated, or the CPU process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def real_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens of a host batch the model really reads: its ``attention_mask`` ones (right-padded fine-tuning
    batches), else every position (packed pretraining rows have no padding)."""
    mask = batch.get("attention_mask")
    if mask is not None:
        return int(mask.sum())
    return int(batch["input_ids"].numel())


class StepTimer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.start = now - self.start, now
        return elapsed


class MetricsLogger:
    """Writes metric records on rank 0: a compact console line, metrics.jsonl and TensorBoard."""

    def __init__(self, run_dir: Path, *, enabled: bool, jsonl: bool, tensorboard: bool, wandb: bool,
                 run_name: str, config: dict[str, Any]) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self._jsonl = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if jsonl:
            self._jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        if wandb:
            import wandb as wb  # optional; WANDB_MODE=offline works without network

            self._wandb = wb.init(project=os.environ.get("WANDB_PROJECT", "llmtrain"), name=run_name,
                                  config=config, dir=str(run_dir), resume="allow")

    def log(self, record: dict[str, Any], *, console: str | None = None) -> None:
        if not self.enabled:
            return
        if console:
            log.info(console)
        step = int(record.get("step", 0))
        if self._jsonl:
            self._jsonl.write(json.dumps(record) + "\n")
        if self._tb:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def close(self) -> None:
        if self._jsonl:
            self._jsonl.close()
        if self._tb:
            self._tb.close()
        if self._wandb:
            self._wandb.finish()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(metrics_path: Path, out_png: Path) -> Path | None:
    """Train loss and per-source validation loss against step, from metrics.jsonl."""
    records = read_metrics(metrics_path)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    if train:
        ax.plot(*zip(*train, strict=True), label="train", lw=1.2)
    val_keys = sorted({k for r in records if r.get("kind") == "validation" for k in r if k.startswith("val/") and k.endswith("/loss")})
    for key in val_keys:
        pts = [(r["step"], r[key]) for r in records if key in r]
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=key[4:-5])
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
