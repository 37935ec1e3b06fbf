"""`llmtrain train`: pretrain under DeepSpeed ZeRO; works unchanged under any launcher."""

from __future__ import annotations

import argparse

CONFIG_EPILOG = ("Every config key, its type, default and meaning: `llmtrain config explain` (all sections), "
                 "`llmtrain config explain train` (one section), `llmtrain config explain train.precision` (one key).")


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="run config YAML (e.g. configs/pretrain/tiny.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=100 (repeatable); "
                        "keys: `llmtrain config explain`")
    p.add_argument("--resume", default=None, metavar="auto|never|PATH",
                   help="auto: continue from <run dir>/latest if present (default); never: start fresh; "
                        "PATH: a run or step directory")
    p.add_argument("--print-config", action="store_true",
                   help="print the whole resolved config (YAML, after --set and the launcher's settings) and exit "
                        "without training; a run saves the same text as <run dir>/config.yaml")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a model (DeepSpeed ZeRO 0-3, any launcher)",
                       description="Pretrain a decoder-only model on prepared shards. Start it directly for one "
                                   "process, or under torchrun / accelerate launch / deepspeed / srun / mpirun. "
                                   "At start, rank 0 prints a short summary (model, data, batch, precision, ZeRO, "
                                   "launcher, run directory) and saves the full resolved config in the run directory.",
                       epilog=CONFIG_EPILOG)
    add_run_args(p)
    p.set_defaults(func=run)


def load_config(args: argparse.Namespace, root: type | None = None):
    """The command's config root (``llmtrain train``'s unless given) from --config, --set, --resume and the
    launcher's precision (accelerate's ``mixed_precision``)."""
    from llmtrain.config.loader import load_run_config

    overrides = list(args.overrides)
    if args.resume is not None:
        overrides.append(f"checkpoint.resume={args.resume}")
    cfg = load_run_config(args.config, overrides, root)
    precision = launcher_precision_override(args.config, overrides, cfg.train.precision)
    if precision is not None:
        cfg = load_run_config(args.config, [*overrides, f"train.precision={precision}"], root)
    return cfg


def launcher_precision_override(config: str, overrides: list[str], configured: str) -> str | None:
    """The train.precision accelerate's ``mixed_precision`` asks for, when the config leaves the key unset.

    A precision that the config (YAML or --set) also names must agree with it: two places that disagree
    about the number format of a run are refused, naming the key that decides.
    """
    from llmtrain.config.base import ConfigError
    from llmtrain.config.loader import apply_overrides, read_yaml
    from llmtrain.distributed.env import launcher_precision
    from llmtrain.distributed.logging import get_logger

    wanted = launcher_precision()
    if wanted is None or wanted == configured:
        return None
    train = apply_overrides(read_yaml(config), overrides).get("train")
    if isinstance(train, dict) and "precision" in train:
        raise ConfigError([f"train.precision: the config sets {configured} but accelerate launch set "
                           f"mixed_precision={wanted} (ACCELERATE_MIXED_PRECISION); llmtrain's precision is "
                           f"train.precision: set --set train.precision={wanted}, or remove mixed_precision from the "
                           f"accelerate config (or pass --mixed_precision no)"], config)
    get_logger("llmtrain").info(f"[llmtrain] train.precision={wanted} from accelerate's mixed_precision "
                                f"(the config leaves train.precision at its default, {configured})")
    return wanted


def print_config(cfg, note: str | None = None) -> int:
    """``--print-config``: the resolved config on stdout (rank 0 only under a launcher), after a YAML comment."""
    from llmtrain.config.loader import dump_yaml
    from llmtrain.distributed.env import process_rank

    if process_rank() == 0:
        print("".join(f"# {line}\n" for line in (note or "").splitlines()) + dump_yaml(cfg), end="", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if args.print_config:
        return print_config(cfg)
    from llmtrain import objectives

    return run_training(cfg, objectives.get("pretrain").build_task, "done")


def run_training(cfg, build_task, done: str) -> int:
    """Start the process group, build the task, then fit; shared by `train` and `finetune`."""
    from llmtrain.distributed.logging import get_logger
    from llmtrain.training.launcher_watch import watch_launcher
    from llmtrain.training.loop import Trainer
    from llmtrain.training.run_lock import hold_run_dir
    from llmtrain.training.runtime import run_dir_of, save_resolved_config, start
    from llmtrain.training.summary import announce

    env, device = start(cfg)
    watch_launcher(env)  # a worker whose launcher was killed stops within seconds, without a checkpoint
    with hold_run_dir(run_dir_of(cfg), env.rank):  # one writer per run directory
        task = build_task(cfg, env, device)
        trainer = Trainer(cfg, task, env, device)
        # after every data, batch and checkpoint check: bad input writes nothing
        config_file = save_resolved_config(cfg, env)
        point = trainer.resume_point
        announce(cfg, env, task, device=device.type, config_file=config_file,
                 resumed_from=point.step_dir if point else None)
        result = trainer.fit()
    if result.exit_code == 0:
        get_logger("llmtrain").info(f"[llmtrain] {done}: {result.step} steps, checkpoint {result.last_checkpoint}")
    return result.exit_code
