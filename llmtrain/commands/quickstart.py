"""`llmtrain quickstart`: the whole pipeline on real text, end to end, on this machine."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart", help="run the whole pipeline on real text: data, pretraining, eval, fine-tuning, export",
        description="Fetch the starter corpora and the sentiment training split's movie text, train a tokenizer, "
                    "prepare shards, plan the mixture, pretrain the tiny model with 2 processes under DeepSpeed "
                    "ZeRO-2, evaluate perplexity per source, fine-tune for sentiment from the pretrained weights and "
                    "from random weights, score both beside majority and TF-IDF baselines on the same test split, "
                    "export to Hugging Face, and write report.md. Each stage is skipped when its output exists. On a "
                    "GPU workstation add --gpu.")
    p.add_argument("--workdir", default="quickstart", help="where data, checkpoints and the report go (default ./quickstart)")
    p.add_argument("--gpu", action="store_true", help="run on the visible CUDA GPUs in bf16 (one process per GPU)")
    p.add_argument("--nproc", type=int, default=None, help="training processes (default 2 on CPU, #GPUs with --gpu)")
    p.add_argument("--steps", type=int, default=None, help="pretraining steps (default: configs/pretrain/quickstart.yaml)")
    p.add_argument("--finetune-steps", type=int, default=None, help="fine-tuning steps of both fine-tunes (default: configs/finetune/sentiment.yaml)")
    p.add_argument("--only", nargs="+", default=None, metavar="STAGE", help="run only these stages (and the report)")
    p.add_argument("--force", nargs="+", default=None, metavar="STAGE", help="re-run these stages even if done")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from llmtrain.errors import UserError
    from llmtrain.quickstart import Quickstart

    if args.gpu and not torch.cuda.is_available():
        raise UserError("--gpu was given but no CUDA GPU is visible; drop --gpu to run on the CPU")
    nproc = args.nproc or (torch.cuda.device_count() if args.gpu else 2)
    qs = Quickstart(Path(args.workdir), gpu=args.gpu, nproc=nproc, steps=args.steps, finetune_steps=args.finetune_steps)
    return qs.run(only=args.only, force=args.force)
