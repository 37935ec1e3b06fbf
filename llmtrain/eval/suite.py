"""Entry points that put the evaluations together, for `llmtrain eval` and for in-training eval.

- :func:`run_evaluation`: everything the run config asks for on a loaded model, written as a report.
- :func:`finetune_evaluator`: the ``TrainingTask.evaluate`` callable of a fine-tuning run (held-out
  loss for SFT, accuracy/macro-F1 for classification), run every ``train.eval_every`` steps.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmtrain.config.schema import RunConfig
from llmtrain.data.finetune_data import FinetuneData, build_finetune_data
from llmtrain.data.finetune_loader import eval_batches
from llmtrain.eval.baselines import classification_baselines
from llmtrain.eval.classification import evaluate_classifier
from llmtrain.eval.generate import SamplingConfig, generate_text
from llmtrain.eval.load import LoadedModel
from llmtrain.eval.perplexity import lm_loss, perplexity_per_source
from llmtrain.eval.report import write_report
from llmtrain.training.objectives import IGNORE_INDEX


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DeepSpeed engine and the trainer's loss wrapper (``.module`` / ``.model``)."""
    while hasattr(module, "module") and isinstance(module.module, nn.Module):
        module = module.module
    if hasattr(module, "loss_fn") and isinstance(getattr(module, "model", None), nn.Module):
        module = module.model
    return module


def finetune_evaluator(data: FinetuneData, *, micro_batch_size: int, pad_id: int, device: torch.device,
                       dp_rank: int = 0, dp_size: int = 1, split: str = "validation") -> Callable[[nn.Module], dict[str, float]] | None:
    """``evaluate(model_or_engine) -> {"val/...": value}`` over ``split``; None when that split is empty.

    With ``dp_size`` > 1 each rank evaluates its share and results are summed over ranks; with the
    default ``dp_size=1`` every rank evaluates the whole split and nothing is reduced.
    """
    examples = data.splits.get(split) or []
    if not examples:
        return None

    def evaluate(model: nn.Module) -> dict[str, float]:
        batches = eval_batches(examples, micro_batch_size=micro_batch_size, pad_id=pad_id,
                               dp_rank=dp_rank, dp_size=dp_size)
        inner = unwrap(model)
        if data.task == "classification":
            m = evaluate_classifier(inner, batches, device, len(data.label_names), data.label_names,
                                    reduce=dp_size > 1)
            return {f"val/{k}": v for k, v in m.items() if k in ("accuracy", "macro_f1")}
        m = lm_loss(inner, batches, device, reduce=dp_size > 1)
        return {"val/loss": m["loss"], "val/ppl": m["ppl"]}

    return evaluate


def _data_sources(data_config: str) -> list[str]:
    from llmtrain.data.loader import describe_data

    info = describe_data(data_config)
    return list(info.get("sources") or info.get("source_names") or [])


def run_evaluation(loaded: LoadedModel, cfg: RunConfig, out_dir: str | Path, *, device: torch.device | str = "cpu",
                   lm_eval_tasks: list[str] | None = None, lm_eval_limit: int | None = None,
                   sources: list[str] | None = None, plots: bool = True) -> dict[str, Any]:
    """Run the evaluations ``cfg.eval`` / ``cfg.finetune`` ask for and write eval.json + eval.md (+ PNGs).

    Perplexity per source needs ``cfg.data.config`` (prepared shards); classification metrics need a
    classifier checkpoint and ``cfg.finetune`` describing its dataset (baselines run on the same
    split); SFT loss needs ``finetune.task=sft`` and a dataset; samples need ``eval.prompts``;
    lm-eval tasks (``eval.lm_eval_tasks`` or ``lm_eval_tasks``) export the backbone to HF first.
    """
    device = torch.device(device)
    ev, ft, t = cfg.eval, cfg.finetune, cfg.train
    results: dict[str, Any] = {"model": str(loaded.source)}
    tok = loaded.tokenizer
    if ev.perplexity and cfg.data.config:
        names = sources or _data_sources(cfg.data.config)
        results["perplexity"] = perplexity_per_source(loaded.model, cfg.data.config, names, seq_len=t.seq_len,
                                                      micro_batch_size=t.micro_batch_size, max_batches=ev.batches,
                                                      device=device)
    if ft.dataset and tok is not None and (loaded.classifier is not None or ft.task == "sft"):
        data = build_finetune_data(ft, tok, seq_len=t.seq_len)
        split = "test" if data.splits["test"] else "validation"
        pad = tok.pad_id if tok.pad_id >= 0 else 0
        if data.task == "classification" and loaded.classifier is not None:
            batches = eval_batches(data.splits[split], micro_batch_size=t.micro_batch_size, pad_id=pad)
            ours = evaluate_classifier(loaded.classifier, batches, device, len(data.label_names), data.label_names)
            base = classification_baselines(data.records["train"], data.records[split], text_field=data.text_field,
                                            label_field=data.label_field, label_names=data.label_names)
            results["classification"] = {"fine-tuned": ours, **base}
            results["classification_task"] = f"{ft.dataset} ({split} split)"
        elif data.task == "sft":
            results["sft"] = {s: lm_loss(loaded.model, eval_batches(ex, micro_batch_size=t.micro_batch_size, pad_id=pad), device)
                              for s, ex in data.splits.items() if s != "train" and ex}
    if ev.prompts and tok is not None:
        sampling = SamplingConfig(max_new_tokens=ev.max_new_tokens)
        results["samples"] = [{"prompt": p, "completion": generate_text(loaded.model, tok, p, sampling,
                                                                         chat_template=loaded.chat_template)}
                              for p in ev.prompts]
    tasks = lm_eval_tasks if lm_eval_tasks is not None else ev.lm_eval_tasks
    if tasks:
        results["lm_eval"] = lm_eval_on(loaded, tasks, limit=lm_eval_limit)
    results["files"] = {k: str(v) for k, v in write_report(results, out_dir, plots=plots).items()}
    return results


def export_backbone(loaded: LoadedModel, out_dir: str | Path) -> Path:
    """The backbone as a HF Llama directory with the tokenizer (and chat template) beside it."""
    from llmtrain.data.sft import save_chat_template
    from llmtrain.model.hf import export_hf

    sd = {k: v for k, v in loaded.model.state_dict().items() if not k.startswith("rope.")}
    tok_dir = loaded.tokenizer.directory if loaded.tokenizer is not None else None
    out = export_hf(sd, loaded.config, out_dir, tokenizer_dir=tok_dir)
    if loaded.chat_template:
        save_chat_template(loaded.chat_template, out)
    return out


def lm_eval_on(loaded: LoadedModel, tasks: list[str], *, limit: int | None = None) -> dict[str, dict[str, float]]:
    from llmtrain.eval.lm_eval_bridge import run_lm_eval

    with tempfile.TemporaryDirectory(prefix="llmtrain-hf-") as tmp:
        hf_dir = export_backbone(loaded, tmp)
        return run_lm_eval(hf_dir, tasks, limit=limit)


__all__ = ["IGNORE_INDEX", "export_backbone", "finetune_evaluator", "lm_eval_on", "run_evaluation", "unwrap"]
