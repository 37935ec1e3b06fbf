"""What every fine-tuning objective shares: the starting model, LoRA, records, batches, evaluation plumbing.

:class:`FinetuneObjective` builds the :class:`TrainingTask` once for all of them. The starting
weights come from an llmtrain checkpoint (any ZeRO stage, any world size: its consolidated
``model.safetensors``), an llmtrain model directory or a local Hugging Face Llama directory; a subclass
says how records become examples (:meth:`encode`), what wraps the backbone (:meth:`build_model`),
its loss and its held-out metrics (:meth:`metrics`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmtrain.config.base import ConfigError
from llmtrain.config.roots import EvalRunConfig, FinetuneRunConfig
from llmtrain.config.schema import FinetuneConfig, ModelSection
from llmtrain.data.finetune_loader import FinetuneBatchIterator, eval_batches
from llmtrain.data.finetune_sets import load_records
from llmtrain.data.prefetch import PrefetchLoader
from llmtrain.data.sft import TextTokenizer
from llmtrain.distributed.env import DistEnv
from llmtrain.distributed.logging import get_logger
from llmtrain.errors import DataError
from llmtrain.model.lora import apply_lora, count_trainable, merge_lora_state
from llmtrain.model.runtime import apply_runtime
from llmtrain.modelio.hf.families import source_config_files
from llmtrain.modelio.hf.generic import HFCausalLM
from llmtrain.modelio.hf.generic_tuning import apply_hf_lora, apply_hf_runtime, module_files, without_tied
from llmtrain.modelio.layout import ADAPTER_SETTINGS, ADAPTER_WEIGHTS
from llmtrain.modelio.load import LoadedModel, Partitioning, load_model
from llmtrain.objectives.base import EncodedData, Evaluator, Objective
from llmtrain.objectives.finetune_schedule import clip_warmup, settle_max_steps
from llmtrain.training.runtime import model_partitioning
from llmtrain.training.task import Batch, TrainingTask

log = get_logger(__name__)


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DeepSpeed engine and the trainer's loss wrapper (``.module`` / ``.model``)."""
    while hasattr(module, "module") and isinstance(module.module, nn.Module):
        module = module.module
    if hasattr(module, "loss_fn") and isinstance(getattr(module, "model", None), nn.Module):
        module = module.model
    return module


def load_init(cfg: FinetuneRunConfig, partitioning: Partitioning | None = None) -> LoadedModel:
    """The starting model of ``finetune.init`` with its tokenizer; its architecture becomes ``cfg.model``.

    With ``partitioning`` (ZeRO-3) the model is created partitioned and filled layer by layer.
    """
    ft, t = cfg.finetune, cfg.train
    if not ft.init:
        raise ConfigError(["finetune.init: required; pass --init CHECKPOINT (a run or step directory of "
                           "`llmtrain train`) or a local Hugging Face causal-LM directory"])
    loaded = load_model(ft.init, partitioning=partitioning, hf_module=ft.hf_module)
    if loaded.tokenizer is None:
        raise ConfigError([f"finetune.init: {ft.init} has no tokenizer beside the weights; fine-tuning needs the "
                           f"tokenizer the model was trained with (checkpoints carry it in tokenizer/)"])
    model_cfg = loaded.config
    ignored = cfg.model.architecture().architecture_diff(model_cfg, labels=("config", "finetune.init"))
    if ignored:
        log.info("[llmtrain] the architecture is finetune.init's; the run config's model section differs and is "
                 "replaced (%s)", "; ".join(ignored[:4]) + (" ..." if len(ignored) > 4 else ""))
    cfg.model = ModelSection.of(model_cfg, cfg.model.runtime())  # what config.yaml of each checkpoint records
    if t.seq_len > model_cfg.max_seq_len:
        raise ConfigError([f"train.seq_len: {t.seq_len} exceeds the model's max_seq_len {model_cfg.max_seq_len}"])
    tok = loaded.tokenizer
    if tok.vocab_size > model_cfg.vocab_size:
        raise DataError(f"the tokenizer beside {ft.init} has {tok.vocab_size} ids but the model only "
                        f"{model_cfg.vocab_size} embeddings; the tokenizer does not belong to these weights")
    return loaded


class FinetuneObjective(Objective):
    """An objective trained on records from ``finetune.dataset``, starting from ``finetune.init``."""

    def read(self, ft: FinetuneConfig, tokenizer: TextTokenizer, *, seq_len: int) -> EncodedData:
        """``ft.dataset``'s records, encoded by this objective (identical on every rank)."""
        if not ft.dataset:
            raise DataError("finetune.dataset is empty; set it to a named set (rotten_tomatoes, chatterbot), "
                            "a .jsonl/.json/.csv/.parquet/.arrow file or a save_to_disk directory")
        records = load_records(ft.dataset, ft.validation_fraction, encoding=ft.csv_encoding)
        return self.encode(records, ft, tokenizer, seq_len=seq_len)

    def build_model(self, backbone: nn.Module, data: EncodedData, ft: FinetuneConfig, *, pad_id: int,
                    seed: int) -> tuple[nn.Module, dict[str, Any] | None]:
        """The module to train around ``backbone`` and its ``head.json`` content (None: no head)."""
        return backbone, None

    def metrics(self, model: nn.Module, batches: Iterable[Batch], data: EncodedData, device: torch.device, *,
                reduce: bool) -> dict[str, float]:
        """Held-out metrics of ``model`` (unwrapped) over ``batches``, keyed without the ``val/`` prefix."""
        raise NotImplementedError

    def evaluator(self, data: EncodedData, *, micro_batch_size: int, pad_id: int, device: torch.device,
                  dp_rank: int = 0, dp_size: int = 1, split: str = "validation") -> Evaluator | None:
        """``evaluate(model_or_engine) -> {"val/...": value}`` over ``split``; None when that split is empty.

        With ``dp_size`` > 1 each rank evaluates its share and results are summed over ranks; with the
        default ``dp_size=1`` every rank evaluates the whole split and nothing is reduced.
        """
        examples = data.splits.get(split) or []
        if not examples:
            return None

        def evaluate(model: nn.Module) -> dict[str, float]:
            batches = eval_batches(examples, micro_batch_size=micro_batch_size, pad_id=pad_id, dp_rank=dp_rank,
                                   dp_size=dp_size, collate_fn=self.collate)
            m = self.metrics(unwrap(model), batches, data, device, reduce=dp_size > 1)
            return {f"val/{k}": v for k, v in m.items()}

        return evaluate

    def eval_data(self, loaded: LoadedModel, cfg: EvalRunConfig) -> EncodedData | None:
        """``cfg.finetune``'s dataset encoded for ``llmtrain eval``; None when there is none or no tokenizer."""
        if not cfg.finetune.dataset or loaded.tokenizer is None:
            return None
        return self.read(cfg.finetune, loaded.tokenizer, seq_len=cfg.train.seq_len)

    def build_task(self, cfg: FinetuneRunConfig, env: DistEnv, device: torch.device) -> TrainingTask:
        partitioning = model_partitioning(cfg, env, device)
        loaded = load_init(cfg, partitioning)
        ft, t, tok = cfg.finetune, cfg.train, loaded.tokenizer
        pad_id = tok.pad_id if tok.pad_id >= 0 else tok.eos_id
        data = self.read(ft, tok, seq_len=t.seq_len)
        # before the trainer builds the LR schedule from cfg.train.max_steps
        clip_warmup(cfg.optim, settle_max_steps(t, len(data.splits["train"])))
        # partitioned parameters already have the engine's dtype (and .float() would not reach the partitions)
        backbone = (loaded.model if partitioning is not None else loaded.model.float()).train()
        hf_module = isinstance(backbone, HFCausalLM)  # a transformers module trained as-is (modelio.hf.generic)
        if ft.lora.enabled:
            # the adapters' init depends on the seed alone, not on how much of the RNG building the backbone
            # used (a whole model loads on the meta device, a ZeRO-3 model is created partitioned)
            torch.manual_seed(t.seed)
            (apply_hf_lora if hf_module else apply_lora)(backbone, ft.lora)
        module, head = self.build_model(backbone, data, ft, pad_id=pad_id, seed=t.seed)
        (apply_hf_runtime if hf_module else apply_runtime)(module, cfg.model.runtime())
        trainable, total = count_trainable(module)
        log.info("fine-tuning %s from %s: %s %s; trainable parameters %s of %s", self.name, ft.init, self.name,
                 data.summary(), f"{trainable:,}", f"{total:,}")
        loader = FinetuneBatchIterator(data.splits["train"], seq_len=t.seq_len, micro_batch_size=t.micro_batch_size,
                                       global_batch_size=t.global_batch_size, dp_rank=env.rank, dp_size=env.world_size,
                                       seed=t.seed, pad_id=pad_id, collate_fn=self.collate)
        loader = PrefetchLoader(loader, 0)  # no prefetch field for fine-tuning yet; measures the data wait

        def export_state(_model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            state = merge_lora_state(state, ft.lora) if ft.lora.enabled else state
            return without_tied(state, backbone) if hf_module else state

        def adapter_weights(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
            # the unmerged adapter too, so that export can write a PEFT adapter beside the merged model
            return {ADAPTER_WEIGHTS: {k: v for k, v in state.items() if k.endswith((".lora_A", ".lora_B"))}}

        adapter = {ADAPTER_SETTINGS: json.dumps({"rank": ft.lora.rank, "alpha": ft.lora.alpha, "dropout": ft.lora.dropout,
                                                 "targets": list(ft.lora.targets), "init": str(ft.init)}, indent=2)}

        return TrainingTask(
            model=module, model_config=loaded.config, loss_fn=self.loss, train_loader=loader,
            tokens_per_sample=t.seq_len,
            # Every rank evaluates the whole (small) held-out split, so all ranks agree and ZeRO-3 stays in step.
            evaluate=self.evaluator(data, micro_batch_size=t.micro_batch_size, pad_id=pad_id, device=device),
            export_state=export_state, tokenizer_dir=Path(tok.directory), head=head,
            extra_weights=adapter_weights if ft.lora.enabled else None,
            # the source Hugging Face config travels with the weights, so export writes the same class
            extra_files={**self.export_files(data), **source_config_files(loaded.hf_config),
                         **(adapter if ft.lora.enabled else {}), **(module_files(backbone) if hf_module else {})},
            extra_state={"tokenizer_fingerprint": tok.fingerprint, "finetune_task": self.name, "init": str(ft.init)},
        )
