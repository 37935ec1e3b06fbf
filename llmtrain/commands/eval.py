"""`llmtrain eval`: perplexity per source, downstream accuracy/F1 with baselines, samples, lm-eval."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: perplexity per source, task accuracy, samples, lm-eval",
                       description="Evaluate an llmtrain checkpoint (or HF Llama directory). What runs comes from the "
                                   "checkpoint's saved config, changed by --config/--set; results go to eval.json and "
                                   "eval.md (+ plots) in --out.")
    p.add_argument("--checkpoint", required=True, help="run directory (uses `latest`), step directory or HF directory")
    p.add_argument("--config", default=None, help="run config to take data/eval/finetune sections from "
                                                  "(default: the one saved with the checkpoint)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set eval.batches=4 (repeatable)")
    p.add_argument("--tasks", nargs="*", default=None,
                   help="what to run: perplexity, classification, sft, samples (default: eval.tasks, else all that apply)")
    p.add_argument("--prompt", action="append", default=[], help="generate a sample for this prompt (repeatable)")
    p.add_argument("--lm-eval", nargs="+", default=None, metavar="TASK",
                   help="lm-eval-harness tasks from configs/eval/ (exports to HF format first)")
    p.add_argument("--lm-eval-limit", type=int, default=None, help="evaluate at most this many documents per task")
    p.add_argument("--out", default=None, help="output directory (default: <checkpoint>/eval)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from llmtrain import objectives
    from llmtrain.config.base import ConfigError, build
    from llmtrain.config.loader import apply_overrides, read_yaml
    from llmtrain.config.roots import EvalRunConfig, keep_sections
    from llmtrain.eval.suite import run_evaluation
    from llmtrain.modelio.layout import CONFIG_YAML
    from llmtrain.modelio.load import load_model

    loaded = load_model(args.checkpoint)
    saved = Path(loaded.source) / CONFIG_YAML
    if args.config:
        data = read_yaml(args.config)
    elif saved.is_file():
        data = read_yaml(saved)
    else:
        data = {}
    # a training or fine-tuning config (the checkpoint's own, or a recipe) also holds sections that
    # only those commands read (the checkpoint defines the architecture): evaluation skips them
    data = keep_sections(apply_overrides(data, args.overrides), EvalRunConfig)
    cfg = build(EvalRunConfig, data, source=args.config or str(saved))
    asked = args.tasks if args.tasks else cfg.eval.tasks
    tasks = set(asked) if asked else None
    known = {"perplexity", "samples", *objectives.names()} - {"pretrain"}
    if tasks is not None and tasks - known:
        raise ConfigError([f"--tasks / eval.tasks: unknown task(s) {sorted(tasks - known)}; choose from "
                           f"{', '.join(sorted(known))}"])
    if tasks is not None:
        cfg.eval.perplexity = "perplexity" in tasks
        if not tasks & set(objectives.names()):  # no objective's metrics asked for
            cfg.finetune.dataset = ""
    if args.prompt:
        cfg.eval.prompts = list(args.prompt)
    elif tasks is not None and "samples" not in tasks:
        cfg.eval.prompts = []
    out = Path(args.out) if args.out else Path(loaded.source) / "eval"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded.model.to(device)
    if loaded.classifier is not None:
        loaded.classifier.to(device)
    results = run_evaluation(loaded, cfg, out, device=device, lm_eval_tasks=args.lm_eval, lm_eval_limit=args.lm_eval_limit)
    summary = {k: v for k, v in results.items() if k not in ("files", "samples")}
    print(json.dumps(summary, indent=2, default=str))
    for s in results.get("samples", []):
        print(f"--- {s['prompt']!r}\n{s['completion']}")
    print(f"[llmtrain] wrote {', '.join(results.get('files', {}).values())}")
    return 0
