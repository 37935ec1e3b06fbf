"""`llmtrain <command>`: one entry point for every stage of the pipeline.

Each command lives in ``llmtrain/commands/<name>.py`` with ``register(subparsers)`` (argument
definitions only, cheap to import) and ``run(args) -> int`` (imports the heavy parts lazily).
Errors the user can fix (ConfigError, UserError) print one paragraph and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from llmtrain.errors import UserError

COMMANDS = ("tokenizer", "prepare", "mixture", "train", "finetune", "eval", "export", "generate",
            "import-hf", "quickstart", "bigbench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmtrain",
        description="Pretrain, fine-tune, evaluate and export decoder-only language models.",
    )
    # the deepspeed launcher inserts --local_rank=N after the module name; ranks come from the environment
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"llmtrain.commands.{name.replace('-', '_')}")
        module.register(sub)
    return parser


def _exit_now_if_distributed(code: int) -> None:
    """Leave a distributed run without interpreter teardown. Destroying the process group can block on
    a dead peer, and gloo's threads can abort the interpreter at exit ("terminate called without an
    active exception", seen on CPU runs that had finished and saved), which launchers report as a
    failure. Every file is closed by now (checkpoints, metrics), so only stdio needs a flush."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    from llmtrain.config.base import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        _exit_now_if_distributed(code)
        return code
    except (ConfigError, UserError) as e:
        print(f"llmtrain {args.command}: error: {e}", file=sys.stderr)
        _exit_now_if_distributed(2)
        return 2
    except KeyboardInterrupt:
        print(f"llmtrain {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
