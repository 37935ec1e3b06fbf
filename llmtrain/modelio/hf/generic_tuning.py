"""LoRA, run-time switches and export for a transformers module trained as-is (:mod:`.generic`).

LoRA uses llmtrain's own adapter (:class:`llmtrain.model.lora.LoRALinear`) on the module's linear
layers. ``finetune.lora.targets`` may name our projections (wq, wk, wv, wo, w1, w2, w3), which map
to the usual Hugging Face names, fused ones included (Phi-3's ``qkv_proj`` and ``gate_up_proj``), or
name the module's own linear layers directly (``q_proj``, ``dense``, ...). Export is ``save_pretrained``
of the fine-tuned module (config.json with its own class), the tokenizer and ``generation_config.json``;
a LoRA run also exports a PEFT adapter, whose names are the module's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmtrain.distributed.logging import get_logger
from llmtrain.errors import CheckpointError
from llmtrain.model.config import LoraConfig
from llmtrain.model.lora import LORA_TARGETS, LoRALinear
from llmtrain.model.runtime import ModelRuntime
from llmtrain.modelio.hf.generic import HF_MODULE_FILE, HFCausalLM

# our projection -> the names transformers models give it (separate, then fused)
HF_TARGETS = {"wq": ("q_proj", "qkv_proj"), "wk": ("k_proj", "qkv_proj"), "wv": ("v_proj", "qkv_proj"),
              "wo": ("o_proj",), "w1": ("gate_proj", "gate_up_proj"), "w3": ("up_proj", "gate_up_proj"),
              "w2": ("down_proj",)}
log = get_logger(__name__)
_ATTENTION = {"sdpa": "sdpa", "eager": "eager", "flash_attn": "flash_attention_2"}


def find_hf_module(model: nn.Module) -> HFCausalLM:
    found = [m for m in model.modules() if isinstance(m, HFCausalLM)]
    if not found:
        raise ValueError(f"{type(model).__name__} contains no transformers causal LM")
    return found[0]


def lora_module_names(model: HFCausalLM, targets: list[str]) -> list[str]:
    """Qualified names of the linear layers ``targets`` selects (the output projection never)."""
    linears = {name: mod for name, mod in model.named_modules() if isinstance(mod, nn.Linear)
               and mod is not model.output}
    leaves = {name.rpartition(".")[2] for name in linears}
    wanted: set[str] = set()
    for t in targets:
        if t in HF_TARGETS:
            wanted.update(n for n in HF_TARGETS[t] if n in leaves)
        elif t in leaves:
            wanted.add(t)
        else:
            raise ValueError(f"lora.targets: {t!r} is neither one of {', '.join(LORA_TARGETS)} nor a linear layer of "
                             f"{type(model.hf).__name__} (its linear layers: {', '.join(sorted(leaves))})")
    chosen = [name for name in linears if name.rpartition(".")[2] in wanted]
    if not chosen:
        raise ValueError(f"lora.targets {sorted(targets)} matched no linear layer of {type(model.hf).__name__}")
    return chosen


def apply_hf_lora(model: HFCausalLM, cfg: LoraConfig) -> list[str]:
    """Freeze ``model`` and wrap the selected linear layers in LoRA adapters; returns their names."""
    chosen = lora_module_names(model, list(cfg.targets))
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, LoRALinear(model.get_submodule(name), cfg.rank, cfg.alpha, cfg.dropout))
    return chosen


def apply_hf_runtime(model: nn.Module, runtime: ModelRuntime) -> nn.Module:
    """The run-time switches on the transformers module inside ``model``: attention and checkpointing.

    ``auto`` keeps transformers' own choice; a backend the model has no implementation for (sdpa for
    Gemma 2, whose attention logits are softcapped) keeps that choice too, and says so. Activation checkpointing (full or selective) recomputes every
    decoder layer, the granularity transformers offers. ``compile`` is not applied to these modules.
    """
    hf = find_hf_module(model).hf
    want = _ATTENTION.get(runtime.attention_backend)
    if want is not None and want != hf.config._attn_implementation:
        try:
            hf.set_attn_implementation(want)
        except (ValueError, ImportError) as e:  # e.g. Gemma 2 has no sdpa path (its attention softcapping)
            log.info("[llmtrain] attention_backend %s: %s keeps %s (%s)", runtime.attention_backend,
                     type(hf).__name__, hf.config._attn_implementation, str(e).split(".")[0])
    if runtime.activation_checkpointing != "none":
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def module_files(model: HFCausalLM) -> dict[str, str]:
    """The marker written beside the weights of a transformers module (fine-tuning checkpoints)."""
    import transformers

    info = {"class": type(model.hf).__name__, "transformers_version": transformers.__version__}
    return {HF_MODULE_FILE: json.dumps(info, indent=2) + "\n"}


def without_tied(state: dict[str, torch.Tensor], model: HFCausalLM) -> dict[str, torch.Tensor]:
    """``state`` without the output weight when it is the input embedding (stored once, re-tied on load)."""
    if model.output is None or model.output.weight is not model.tok_embeddings.weight:
        return state
    names = [n for n, p in model.named_parameters(remove_duplicate=False) if p is model.output.weight]
    emb = next(n for n, m in model.named_modules() if m is model.tok_embeddings) + ".weight"
    drop = {n for n in names if n != emb}
    return {k: v for k, v in state.items() if k.removeprefix("backbone.") not in drop}


def export_hf_module(model: HFCausalLM, out_dir: str | Path, *, tokenizer_dir: str | Path | None,
                     dtype: torch.dtype | None, max_shard_size: int | str = "2GB") -> Path:
    """``save_pretrained`` of the module (its own class and config), the tokenizer and generation config."""
    from llmtrain.modelio.hf.tokenizer import export_tokenizer, special_token_ids, write_generation_config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = model.hf
    if dtype is not None:
        hf.to(dtype)
    ids = special_token_ids(tokenizer_dir)
    for key, value in ids.items():
        setattr(hf.config, key, value)
    hf.save_pretrained(str(out), max_shard_size=max_shard_size)
    write_generation_config(out, ids, tokenizer_dir)
    if tokenizer_dir is not None:
        export_tokenizer(tokenizer_dir, out)
    return out


def export_peft_adapter(adapter: dict[str, torch.Tensor], settings: dict[str, Any], out_dir: str | Path, *,
                        dtype: torch.dtype | None = torch.float32) -> Path:
    """PEFT's LoRA adapter (task CAUSAL_LM) from adapter tensors that carry the module's own names."""
    from safetensors.torch import save_file

    from llmtrain.modelio.peft import PEFT_CONFIG, PEFT_WEIGHTS

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, modules = {}, set()
    for key, t in adapter.items():
        name, _, part = key.removeprefix("backbone.").rpartition(".")
        if part not in ("lora_A", "lora_B"):
            raise CheckpointError(f"adapter tensor {key!r} is not a lora_A/lora_B of a linear layer")
        tensors[f"base_model.model.{name}.{part}.weight"] = t.to(dtype or t.dtype).contiguous()
        modules.add(name.rpartition(".")[2])
    save_file(tensors, str(out / PEFT_WEIGHTS), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": int(settings["rank"]),
              "lora_alpha": float(settings["alpha"]), "lora_dropout": float(settings.get("dropout", 0.0)),
              "target_modules": sorted(modules), "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
              "use_dora": False, "modules_to_save": None, "inference_mode": True, "init_lora_weights": True,
              "base_model_name_or_path": settings.get("init")}
    (out / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out


def export_loaded(loaded: Any, out_dir: Path, *, dtype: torch.dtype | None, max_shard_size: int,
                  backbone_only: bool = False) -> str:
    """Export a loaded transformers module (a :class:`~llmtrain.modelio.load.LoadedModel`); the note to print.

    A classifier becomes the family's ``*ForSequenceClassification`` (the module's weights plus
    ``score.weight``, right padding, EOS appended), under the same conditions as a native one
    (:func:`llmtrain.modelio.hf.heads.classifier_problems`).
    """
    from llmtrain.modelio.hf.heads import (
        CAUSAL_SUFFIX,
        CLASSIFIER_SUFFIX,
        GENERATION_CONFIG,
        _pad_right_with,
        classifier_problems,
        export_pad_id,
        write_score_weights,
    )
    from llmtrain.modelio.hf.tokenizer import export_tokenizer

    tok = loaded.tokenizer
    tok_dir = tok.directory if tok is not None else None
    clf = None if backbone_only else loaded.classifier
    pad_id = None
    if clf is not None:  # check before writing anything
        score = {k: v.detach() for k, v in clf.score.state_dict().items()}
        eos = tok.eos_id if tok is not None and tok.eos_id >= 0 else None
        pad_id = export_pad_id(int(clf.pad_id), eos, tok_dir)
        problems = classifier_problems(score, loaded.head, eos, pad_id)
        if problems:
            raise CheckpointError(f"this classifier cannot be exported as a *{CLASSIFIER_SUFFIX} with equal logits: "
                                  f"{'; '.join(problems)}. Export the causal-LM backbone alone with `llmtrain export "
                                  f"--backbone-only` (the head stays in the checkpoint)")
    out = export_hf_module(loaded.model, out_dir, tokenizer_dir=tok_dir, dtype=dtype, max_shard_size=max_shard_size)
    if clf is None:
        return " (--backbone-only: the classification head stays in the checkpoint)" if loaded.classifier else ""
    write_score_weights(out, score, dtype, max_shard_size)
    config = json.loads((out / "config.json").read_text())
    arch = type(loaded.model.hf).__name__
    labels = [str(n) for n in loaded.head["label_names"]]
    config.update(architectures=[arch.removesuffix(CAUSAL_SUFFIX) + CLASSIFIER_SUFFIX], pad_token_id=pad_id,
                  id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                  problem_type="single_label_classification", tie_word_embeddings=False)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / GENERATION_CONFIG).unlink(missing_ok=True)
    if tok_dir is not None:
        export_tokenizer(tok_dir, out, append_eos=True)
        _pad_right_with(out, pad_id)
    return f" as a sequence classifier ({len(labels)} labels)"
