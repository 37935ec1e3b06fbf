"""The package's one logger: rank 0 speaks, the console shows the message text as it is.

Messages carry their own tag (``[llmtrain] ...``, ``[prepare] ...``) and read like the lines the
tools always printed, so the console format adds nothing (no time stamp, no logger name). Progress
(INFO) goes to stdout, where users and scripts read it; warnings and errors go to stderr. The rank
is decided when a record is emitted, since it may be known only after the process group starts.

This module imports no torch, so data and data-preparation code may log without pulling in
``torch.distributed``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TextIO

from llmtrain.distributed.env import process_rank

ROOT = "llmtrain"


def _rank() -> int:
    dist = sys.modules.get("torch.distributed")  # only if someone already imported it
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return process_rank()


class Rank0Filter(logging.Filter):
    """Drop records on ranks other than 0; ``extra={"all_ranks": True}`` lets a record through everywhere."""

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(getattr(record, "all_ranks", False)) or _rank() == 0


ConsoleWriter = Callable[[str, TextIO], None]  # (message without newline, stream)
_console_writer: ConsoleWriter | None = None


def set_console_writer(writer: ConsoleWriter | None) -> None:
    """Route console messages through ``writer`` (e.g. ``tqdm.write``, which prints above a live progress
    bar instead of through it); None restores plain writes."""
    global _console_writer
    _console_writer = writer


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr, where progress bars draw) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


class ConsoleHandler(logging.Handler):
    """INFO and below to stdout, WARNING and above to stderr, flushed per record.

    The streams are looked up at every record (not bound at creation) so that redirected or captured
    ``sys.stdout``/``sys.stderr`` (pytest, a notebook, a wrapper script) receive the messages.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            text = self.format(record)
            if _console_writer is not None:
                _console_writer(text, stream)
            else:
                stream.write(text + "\n")
            stream.flush()
        except Exception:  # logging must never take the program down
            self.handleError(record)


def get_logger(name: str) -> logging.Logger:
    """A logger under ``llmtrain`` that prints on rank 0 only (``extra={"all_ranks": True}`` for every rank).

    The first call installs one console handler on the ``llmtrain`` logger (unless the application
    configured one), so that messages show without any logging set-up.
    """
    root = logging.getLogger(ROOT)
    if not root.handlers:
        handler = ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(Rank0Filter())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    logger = logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".") else f"{ROOT}.{name}")
    # On the logger too, so that handlers an application adds above it see rank 0 only.
    if not any(isinstance(f, Rank0Filter) for f in logger.filters):
        logger.addFilter(Rank0Filter())
    return logger
