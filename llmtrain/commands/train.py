"""`llmtrain train`: pretrain under DeepSpeed ZeRO; works unchanged under any launcher."""

from __future__ import annotations

import argparse


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="run config YAML (e.g. configs/pretrain/tiny.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=100 (repeatable)")
    p.add_argument("--resume", default=None, metavar="auto|never|PATH",
                   help="auto: continue from <run dir>/latest if present (default); never: start fresh; "
                        "PATH: a run or step directory")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a model (DeepSpeed ZeRO 0-3, any launcher)",
                       description="Pretrain a decoder-only model on prepared shards. Start it directly for one "
                                   "process, or under torchrun / accelerate launch / deepspeed / srun / mpirun.")
    add_run_args(p)
    p.set_defaults(func=run)


def load_config(args: argparse.Namespace, root: type | None = None):
    """The command's config root (``llmtrain train``'s unless given) from --config, --set and --resume."""
    from llmtrain.config.loader import load_run_config

    overrides = list(args.overrides)
    if args.resume is not None:
        overrides.append(f"checkpoint.resume={args.resume}")
    return load_run_config(args.config, overrides, root)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    from llmtrain import objectives

    return run_training(cfg, objectives.get("pretrain").build_task, "done")


def run_training(cfg, build_task, done: str) -> int:
    """Start the process group, build the task, then fit; shared by `train` and `finetune`."""
    from llmtrain.distributed.logging import get_logger
    from llmtrain.training.launcher_watch import watch_launcher
    from llmtrain.training.loop import Trainer
    from llmtrain.training.run_lock import hold_run_dir
    from llmtrain.training.runtime import announce, run_dir_of, start

    env, device = start(cfg)
    watch_launcher(env)  # a worker whose launcher was killed stops within seconds, without a checkpoint
    with hold_run_dir(run_dir_of(cfg), env.rank):  # one writer per run directory
        task = build_task(cfg, env, device)
        trainer = Trainer(cfg, task, env, device)
        announce(cfg, env)  # after every data, batch and checkpoint check: bad input writes nothing
        result = trainer.fit()
    if result.exit_code == 0:
        get_logger("llmtrain").info(f"[llmtrain] {done}: {result.step} steps, checkpoint {result.last_checkpoint}")
    return result.exit_code
