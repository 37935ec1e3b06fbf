"""`llmtrain finetune`: SFT or classification (optionally LoRA) with the same loop as pretraining."""

from __future__ import annotations

import argparse

from llmtrain.commands.train import CONFIG_EPILOG, add_run_args, load_config, print_config, run_training


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a checkpoint or a local HF Llama directory (SFT, classification, LoRA)",
                       description="Fine-tune from an llmtrain checkpoint (any ZeRO stage or world size) or a local "
                                   "Hugging Face Llama directory, under any launcher, with the pretraining loop. "
                                   "At start, rank 0 prints a short summary and saves the full resolved config in the "
                                   "run directory (its model section then holds finetune.init's architecture).",
                       epilog=CONFIG_EPILOG)
    add_run_args(p)
    p.add_argument("--init", default=None, metavar="CKPT|HF_DIR",
                   help="starting weights (overrides finetune.init): a run/step directory or a HF Llama directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.init:
        args.overrides.append(f"finetune.init={args.init}")
    from llmtrain import objectives
    from llmtrain.config.roots import FinetuneRunConfig

    cfg = load_config(args, FinetuneRunConfig)
    tasks = [n for n in objectives.names() if n != "pretrain"]
    if cfg.finetune.task not in tasks:  # before any process group or compute
        from llmtrain.config.base import ConfigError, closest

        raise ConfigError([f"finetune.task: {cfg.finetune.task!r} is not a fine-tuning objective"
                           f"{closest(cfg.finetune.task, tasks)}; choose from {', '.join(tasks)}"])
    if args.print_config:
        return print_config(cfg, f"the model section's architecture keys are replaced by those of finetune.init "
                                 f"({cfg.finetune.init}) when the run starts; run-time keys stay")
    return run_training(cfg, objectives.get(cfg.finetune.task).build_task, "fine-tuning done")
