"""`llmtrain eval` put together: everything the run config asks for on a loaded model, as one report.

Perplexity per source, samples and lm-eval tasks are the same for every model; the metrics of the
model's objective (SFT loss, classification accuracy beside baselines) come from that objective
(:meth:`llmtrain.objectives.base.Objective.evaluate`), found by :func:`objective_name`. The
in-training evaluators live with their objectives too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from llmtrain import objectives
from llmtrain.config.roots import EvalRunConfig
from llmtrain.eval.generate import SamplingConfig, generate_text, prompt_ids
from llmtrain.eval.perplexity import perplexity_per_source
from llmtrain.eval.report import write_report
from llmtrain.modelio.load import LoadedModel


def _data_sources(data_config: str) -> list[str]:
    from llmtrain.data.loader import describe_data

    info = describe_data(data_config)
    return list(info.get("sources") or info.get("source_names") or [])


def objective_name(loaded: LoadedModel, cfg: EvalRunConfig) -> str:
    """The objective whose metrics to report: a classifier's head says so; otherwise ``finetune.task``.

    A checkpoint's own config (the default for ``llmtrain eval``) carries the task it was trained
    for; ``head.json`` settles it for a classifier even under another config.
    """
    return str(loaded.head.get("task") or "classification") if loaded.classifier is not None else cfg.finetune.task


def run_evaluation(loaded: LoadedModel, cfg: EvalRunConfig, out_dir: str | Path, *, device: torch.device | str = "cpu",
                   lm_eval_tasks: list[str] | None = None, lm_eval_limit: int | None = None,
                   sources: list[str] | None = None, plots: bool = True) -> dict[str, Any]:
    """Run the evaluations ``cfg.eval`` / ``cfg.finetune`` ask for and write eval.json + eval.md (+ PNGs).

    Perplexity per source needs ``cfg.data.config`` (prepared shards); classification metrics need a
    classifier checkpoint and ``cfg.finetune`` describing its dataset (baselines run on the same
    split); SFT loss needs ``finetune.task=sft`` and a dataset; samples need ``eval.prompts``;
    lm-eval tasks (``eval.lm_eval_tasks`` or ``lm_eval_tasks``) export the backbone to HF first.
    """
    device = torch.device(device)
    ev, t = cfg.eval, cfg.train
    results: dict[str, Any] = {"model": str(loaded.source)}
    tok = loaded.tokenizer
    for p in ev.prompts if tok is not None else ():  # a prompt too long for the model: refused before any compute
        prompt_ids(loaded.model.cfg, tok, p, chat_template=loaded.chat_template)
    if ev.perplexity and cfg.data.config:
        names = sources or _data_sources(cfg.data.config)
        results["perplexity"] = perplexity_per_source(loaded.model, cfg.data.config, names, seq_len=t.seq_len,
                                                      micro_batch_size=t.micro_batch_size, max_batches=ev.batches,
                                                      device=device)
    if cfg.finetune.dataset and tok is not None:
        results.update(objectives.get(objective_name(loaded, cfg)).evaluate(loaded, cfg, device=device))
    if ev.prompts and tok is not None:
        sampling = SamplingConfig(max_new_tokens=ev.max_new_tokens, repetition_penalty=ev.repetition_penalty)
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
    from llmtrain.modelio.hf import export_hf
    from llmtrain.modelio.hf.generic import HFCausalLM
    from llmtrain.modelio.layout import write_chat_template

    tok_dir = loaded.tokenizer.directory if loaded.tokenizer is not None else None
    if isinstance(loaded.model, HFCausalLM):  # any other causal LM: save_pretrained of the transformers module
        from llmtrain.modelio.hf.generic_tuning import export_hf_module

        out = export_hf_module(loaded.model, out_dir, tokenizer_dir=tok_dir, dtype=None)
    else:
        sd = {k: v for k, v in loaded.model.state_dict().items() if not k.startswith("rope.")}
        out = export_hf(sd, loaded.config, out_dir, tokenizer_dir=tok_dir, source_config=loaded.hf_config)
    if loaded.chat_template:
        write_chat_template(out, loaded.chat_template)
    return out


def lm_eval_on(loaded: LoadedModel, tasks: list[str], *, limit: int | None = None) -> dict[str, dict[str, float]]:
    from llmtrain.eval.lm_eval_bridge import run_lm_eval

    with tempfile.TemporaryDirectory(prefix="llmtrain-hf-") as tmp:
        hf_dir = export_backbone(loaded, tmp)
        return run_lm_eval(hf_dir, tasks, limit=limit)


__all__ = ["export_backbone", "lm_eval_on", "objective_name", "run_evaluation"]
