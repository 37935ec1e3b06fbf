"""`llmtrain <command>`: one entry point for every stage of the pipeline.

Each command lives in ``llmtrain/commands/<name>.py`` with ``register(subparsers)`` (argument
definitions only, cheap to import) and ``run(args) -> int`` (imports the heavy parts lazily).
Errors the user can fix (ConfigError, UserError) print one paragraph and exit with code 2; with
``--debug`` (or ``LLMTRAIN_DEBUG=1``) their traceback is printed first. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from llmtrain.errors import UserError

COMMANDS = ("tokenizer", "prepare", "mixture", "train", "finetune", "eval", "export", "generate",
            "import-hf", "quickstart", "bigbench", "plan", "config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmtrain",
        description="Pretrain, fine-tune, evaluate and export decoder-only language models.",
        epilog="Run config keys (type, default, meaning): `llmtrain config explain [section[.key]]`. "
               "`llmtrain COMMAND --help` for each command's options.",
    )
    # the deepspeed launcher inserts --local_rank=N after the module name; ranks come from the environment
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of every error, also of user errors (same as LLMTRAIN_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"llmtrain.commands.{name.replace('-', '_')}")
        module.register(sub)
    for name, what in (("eval", ""), ("prepare", " --data-config"), ("mixture", " --data-config")):
        if sub.choices[name].epilog is None:  # every command that reads a config points to its explainer
            sub.choices[name].epilog = (f"Config keys, their types, defaults and meaning: "
                                        f"`llmtrain config explain{what} [KEY]`.")
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
    from llmtrain.distributed.noise import silence_known_noise

    silence_known_noise()  # before torch or DeepSpeed is imported, on every rank

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted after the command name too: `llmtrain train --debug ...`
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        code = int(args.func(args) or 0)
        _exit_now_if_distributed(code)
        return code
    except (ConfigError, UserError) as e:
        if args.debug or os.environ.get("LLMTRAIN_DEBUG", "").strip() not in ("", "0", "false", "no"):
            import traceback

            traceback.print_exc()
        print(f"llmtrain {args.command}: error: {e}", file=sys.stderr)
        _exit_now_if_distributed(2)
        return 2
    except KeyboardInterrupt:
        print(f"llmtrain {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
