"""Build the fine-tuning :class:`TrainingTask` (SFT or classification, optionally LoRA) for the one loop.

The starting weights come from an llmtrain checkpoint (any ZeRO stage, any world size: the
consolidated ``model.safetensors`` or DeepSpeed's states) or a local Hugging Face Llama directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from llmtrain.config.base import ConfigError
from llmtrain.config.schema import LoraConfig, RunConfig
from llmtrain.distributed.env import DistEnv
from llmtrain.training.trainer import TrainingTask

_LORA_KEY = re.compile(r"^(?P<prefix>.*)\.base\.weight$")


def merge_lora_state(state: dict[str, torch.Tensor], lora: LoraConfig) -> dict[str, torch.Tensor]:
    """Fold ``W + alpha/r * B A`` in a state dict and drop the adapter names (base model naming)."""
    out: dict[str, torch.Tensor] = {}
    scale = lora.alpha / lora.rank
    for key, value in state.items():
        if key.endswith((".lora_A", ".lora_B")):
            continue
        m = _LORA_KEY.match(key)
        if m and f"{m['prefix']}.lora_A" in state:
            a, b = state[f"{m['prefix']}.lora_A"].float(), state[f"{m['prefix']}.lora_B"].float()
            out[f"{m['prefix']}.weight"] = (value.float() + scale * (b @ a)).to(value.dtype)
        elif ".base." in key:
            out[key.replace(".base.", ".")] = value
        else:
            out[key] = value
    return out


def build_finetune_task(cfg: RunConfig, env: DistEnv, device: torch.device) -> TrainingTask:
    from llmtrain.data.finetune_data import build_finetune_data
    from llmtrain.data.finetune_loader import FinetuneBatchIterator
    from llmtrain.eval.load import load_model
    from llmtrain.eval.suite import finetune_evaluator
    from llmtrain.model.heads import SequenceClassifier
    from llmtrain.model.lora import apply_lora, count_trainable
    from llmtrain.training.objectives import causal_lm_loss, classification_loss

    ft, t = cfg.finetune, cfg.train
    if not ft.init:
        raise ConfigError(["finetune.init: required; pass --init CHECKPOINT (a run or step directory of "
                           "`llmtrain train`) or a local Hugging Face Llama directory"])
    loaded = load_model(ft.init, attention_backend=cfg.model.attention_backend)
    if loaded.tokenizer is None:
        raise ConfigError([f"finetune.init: {ft.init} has no tokenizer beside the weights; fine-tuning needs the "
                           f"tokenizer the model was trained with (checkpoints carry it in tokenizer/)"])
    model_cfg = loaded.config
    model_cfg.activation_checkpointing = cfg.model.activation_checkpointing
    cfg.model = model_cfg  # the checkpoint defines the architecture; the run config is saved with it
    if t.seq_len > model_cfg.max_seq_len:
        raise ConfigError([f"train.seq_len: {t.seq_len} exceeds the model's max_seq_len {model_cfg.max_seq_len}"])
    tok = loaded.tokenizer
    if tok.vocab_size > model_cfg.vocab_size:
        from llmtrain.errors import DataError

        raise DataError(f"the tokenizer beside {ft.init} has {tok.vocab_size} ids but the model only "
                        f"{model_cfg.vocab_size} embeddings; the tokenizer does not belong to these weights")
    pad_id = tok.pad_id if tok.pad_id >= 0 else tok.eos_id
    data = build_finetune_data(ft, tok, seq_len=t.seq_len)
    backbone = loaded.model.float().train()
    if ft.lora.enabled:
        apply_lora(backbone, ft.lora)
    module: nn.Module = backbone
    head = None
    if data.task == "classification":
        torch.manual_seed(t.seed)
        module = SequenceClassifier(backbone, len(data.label_names), pooling=ft.pooling, pad_id=pad_id)
        head = {"labels": data.label_names, "pooling": ft.pooling, "pad_id": pad_id, "task": "classification"}
    trainable, total = count_trainable(module)
    if env.rank == 0:
        print(f"[llmtrain] fine-tuning {ft.task} from {ft.init}: {data.summary()}; "
              f"trainable parameters {trainable:,} of {total:,}", flush=True)
    loader = FinetuneBatchIterator(data.splits["train"], seq_len=t.seq_len, micro_batch_size=t.micro_batch_size,
                                   global_batch_size=t.global_batch_size, dp_rank=env.rank, dp_size=env.world_size,
                                   seed=t.seed, pad_id=pad_id)
    # Every rank evaluates the whole (small) held-out split, so all ranks agree and ZeRO-3 stays in step.
    evaluate = finetune_evaluator(data, micro_batch_size=t.micro_batch_size, pad_id=pad_id, device=device)

    def export_state(_model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return merge_lora_state(state, ft.lora) if ft.lora.enabled else state

    files = {}
    if data.task == "sft" and data.chat_template:
        from llmtrain.data.sft import CHAT_TEMPLATE_FILE

        files[CHAT_TEMPLATE_FILE] = data.chat_template
    return TrainingTask(
        model=module, model_config=model_cfg,
        loss_fn=classification_loss if data.task == "classification" else causal_lm_loss,
        train_loader=loader, tokens_per_sample=t.seq_len, evaluate=evaluate, export_state=export_state,
        tokenizer_dir=Path(tok.directory), extra_files=files,
        extra_state={"head": head, "tokenizer_fingerprint": tok.fingerprint, "finetune_task": data.task,
                     "init": str(ft.init)} if head else
                    {"tokenizer_fingerprint": tok.fingerprint, "finetune_task": data.task, "init": str(ft.init)},
    )
