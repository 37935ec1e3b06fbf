"""Token-weighted loss and perplexity: per pretraining source, or over any held-out batches (SFT).

The loss is the trainer's own :func:`causal_lm_loss`, so evaluation and training can never disagree
on masking or shifting. Sums of (loss · tokens) and tokens are reduced over data-parallel ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from llmtrain.objectives.losses import causal_lm_loss


@torch.no_grad()
def lm_loss(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], device: torch.device,
            *, document_masking: bool = True, reduce: bool = True) -> dict[str, float]:
    """``{"loss", "ppl", "tokens"}`` over ``batches`` (labels -100 ignored).

    ``reduce`` sums over data-parallel ranks; pass False when every rank saw the whole split.
    """
    was_training = model.training
    model.eval()
    tot = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items() if k != "doc_ids" or document_masking}
        loss, n = causal_lm_loss(model, batch)
        tot += torch.stack([loss.double() * n.double(), n.double()])
    if reduce and dist.is_initialized():
        dist.all_reduce(tot)
    model.train(was_training)
    if tot[1] == 0:
        return {"loss": float("nan"), "ppl": float("nan"), "tokens": 0}
    mean = float(tot[0] / tot[1])
    return {"loss": mean, "ppl": math.exp(min(mean, 50.0)), "tokens": int(tot[1])}


def perplexity_per_source(model: nn.Module, data_config: str, sources: list[str], *, seq_len: int,
                          micro_batch_size: int, max_batches: int, device: torch.device, dp_rank: int = 0,
                          dp_size: int = 1) -> dict[str, dict[str, float]]:
    """``{source: {"loss", "ppl", "tokens"}}`` on the held-out shards of ``data_config``."""
    from llmtrain.data.loader import validation_batches

    out = {}
    for source in sources:
        batches = validation_batches(data_config, source, seq_len=seq_len, micro_batch_size=micro_batch_size,
                                     dp_rank=dp_rank, dp_size=dp_size, max_batches=max_batches)
        if batches:
            out[source] = lm_loss(model, batches, device)
    return out
