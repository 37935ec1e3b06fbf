"""Pretraining: next-token loss over packed token shards, validation loss and perplexity per source.

The data comes prepared (``llmtrain prepare`` writes shards of token ids), so this objective
encodes no records: its loader reads fixed-length rows from the mixture, and its evaluator runs
over each source's held-out split. Perplexity in ``llmtrain eval`` is the report's own section
(:func:`llmtrain.eval.perplexity.perplexity_per_source`), so :meth:`Pretrain.evaluate` adds nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from llmtrain.config.base import ConfigError
from llmtrain.config.roots import PretrainRunConfig
from llmtrain.distributed.env import DistEnv
from llmtrain.distributed.logging import get_logger
from llmtrain.errors import DataError
from llmtrain.model.runtime import apply_runtime
from llmtrain.objectives.base import Objective, register
from llmtrain.objectives.losses import causal_lm_loss
from llmtrain.training.runtime import model_construction
from llmtrain.training.task import Batch, TrainingTask

log = get_logger(__name__)


def check_vocab(model_vocab: int, data_vocab: int, data_config: str) -> None:
    if data_vocab > model_vocab:
        raise DataError(
            f"the shards of {data_config} use a tokenizer with {data_vocab} ids but model.vocab_size is {model_vocab}; "
            f"set model.vocab_size={data_vocab} (or larger), or prepare the data with a smaller tokenizer")


def evaluate_sources(engine: nn.Module, sources: dict[str, list[Batch]], device: torch.device) -> dict[str, float]:
    """Token-weighted validation loss and perplexity per source, summed over data-parallel ranks."""
    out: dict[str, float] = {}
    for name, batches in sources.items():
        tot = torch.zeros(2, dtype=torch.float64, device=device)
        for batch in batches:
            loss, n = engine({k: v.to(device) for k, v in batch.items()})
            tot += torch.stack([loss.detach().double() * float(n), torch.tensor(float(n), dtype=torch.float64, device=device)])
        if dist.is_initialized():
            dist.all_reduce(tot)
        if tot[1] > 0:
            mean = float(tot[0] / tot[1])
            out[f"val/{name}/loss"] = mean
            out[f"val/{name}/ppl"] = math.exp(min(mean, 50.0))
    return out


@register
class Pretrain(Objective):
    """Causal language modelling from scratch on a prepared mixture."""

    name = "pretrain"

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return causal_lm_loss(model, batch)

    def build_task(self, cfg: PretrainRunConfig, env: DistEnv, device: torch.device) -> TrainingTask:
        from llmtrain.data.loader import PretrainLoader, describe_data, validation_batches
        from llmtrain.data.prefetch import PrefetchLoader
        from llmtrain.model.transformer import Transformer

        data_cfg = cfg.data.config
        if not data_cfg:
            raise ConfigError(["data.config: required for pretraining; point it at a data config such as "
                               "configs/data/starter.yaml (prepared with `llmtrain prepare`)"])
        info = describe_data(data_cfg)
        check_vocab(cfg.model.vocab_size, info["vocab_size"], data_cfg)
        t = cfg.train
        loader = PretrainLoader(data_cfg, split="train", seq_len=t.seq_len, micro_batch_size=t.micro_batch_size,
                                global_batch_size=t.global_batch_size, dp_rank=env.rank, dp_size=env.world_size,
                                seed=t.seed, weights=cfg.data.weights, verify=cfg.data.verify)
        loader = PrefetchLoader(loader, cfg.data.num_workers, pin_memory=device.type == "cuda")
        val = {name: validation_batches(data_cfg, name, seq_len=t.seq_len, micro_batch_size=t.micro_batch_size,
                                        dp_rank=env.rank, dp_size=env.world_size, max_batches=t.eval_batches)
               for name in loader.source_names}
        empty = [k for k, v in val.items() if not v]
        if empty:
            need = t.micro_batch_size * env.world_size * (t.seq_len + 1)
            log.info("no validation for %s: a held-out split needs at least micro_batch_size x ranks x (seq_len + 1) "
                     "= %d tokens; raise validation_fraction in the data config or lower train.micro_batch_size",
                     ", ".join(empty), need)
        val = {k: v for k, v in val.items() if v}
        torch.manual_seed(t.seed)  # identical initial weights on every rank
        with model_construction(cfg, env, device):  # ZeRO-3: created partitioned, 1/N of it per rank
            model = Transformer(cfg.model.architecture())
        model = apply_runtime(model, cfg.model.runtime())
        masking = cfg.data.document_masking

        def loss_fn(m: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
            if not masking:
                batch = {k: v for k, v in batch.items() if k != "doc_ids"}
            return self.loss(m, batch)

        return TrainingTask(
            model=model, model_config=cfg.model.architecture(), loss_fn=loss_fn, train_loader=loader, tokens_per_sample=t.seq_len,
            evaluate=(lambda engine: evaluate_sources(engine, val, device)) if val else None,
            tokenizer_dir=Path(info["tokenizer_dir"]) if info.get("tokenizer_dir") else None,
            extra_state={"tokenizer_fingerprint": info.get("tokenizer_fingerprint"), "vocab_size": info["vocab_size"],
                         "data_config": str(data_cfg)},
        )
