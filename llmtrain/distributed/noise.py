"""Known third-party console noise, silenced one message at a time.

A normal run should print nothing the user cannot act on. Each entry below names one message by a
regular expression, its category (a Python warning class or a logging level) and where it comes
from (the warning's module or the logger's name), and says why it is safe to drop; anything else
from the same libraries still shows. Nothing here is a blanket filter on a category or a module.

What stays outside this process: torchrun prints an ``OMP_NUM_THREADS`` banner from the launcher
itself, before any worker starts, whenever the variable is unset. The launch recipes set it
(``launch/torchrun.sh``, ``slurm/``), and docs/launching.md says to do the same on a command line.

This module imports neither torch nor DeepSpeed; :func:`silence_known_noise` runs first thing in
``llmtrain.cli.main``, before either is imported, on every rank.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownWarning:
    """A ``warnings.warn`` message: its text, class and the module the warning is attributed to."""

    message: str  # regex, matched at the start of the message
    category: type[Warning]
    module: str  # regex, matched against the whole module name
    why: str


@dataclass(frozen=True)
class KnownLogRecord:
    """A record of a third-party logger: the logger's name, its level and the message text."""

    logger: str
    level: int
    message: str  # regex, searched in the formatted message
    why: str


KNOWN_WARNINGS = (
    KnownWarning(
        r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated",
        FutureWarning, r"torch\.distributed\.c10d_logger",
        "DeepSpeed's ZeRO calls these collectives on every rank at every step; only a DeepSpeed release can "
        "change it"),
)

KNOWN_LOG_RECORDS = (
    KnownLogRecord(
        "DeepSpeed", logging.WARNING, r"You are using ZeRO with an untested optimizer",
        "the optimizer is torch's AdamW with a non-finite guard (training/optim.py: GuardedAdamW), which "
        "DeepSpeed's exact-type check does not recognise; the generated config sets "
        "zero_allow_untested_optimizer on purpose"),
)


class DropKnownRecords(logging.Filter):
    """Drops the records of one logger that match a known message; lets every other record through."""

    def __init__(self, level: int, patterns: list[re.Pattern[str]]) -> None:
        super().__init__()
        self.level, self.patterns = level, patterns

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != self.level:
            return True
        text = record.getMessage()
        return not any(p.search(text) for p in self.patterns)


def silence_known_noise() -> None:
    """Install the filters for :data:`KNOWN_WARNINGS` and :data:`KNOWN_LOG_RECORDS`.

    Idempotent: a filter already in place (``warnings.filters``, the logger's filters) is not added again,
    and one removed since (e.g. by ``warnings.catch_warnings``) is put back.
    """
    for w in KNOWN_WARNINGS:
        present = any(f[0] == "ignore" and f[2] is w.category and f[1] is not None and f[1].pattern == w.message
                      for f in warnings.filters)
        if not present:
            warnings.filterwarnings("ignore", message=w.message, category=w.category, module=w.module + r"\Z")
    by_logger: dict[tuple[str, int], list[re.Pattern[str]]] = {}
    for r in KNOWN_LOG_RECORDS:
        by_logger.setdefault((r.logger, r.level), []).append(re.compile(r.message))
    for (name, level), patterns in by_logger.items():
        # a filter on the logger object itself: DeepSpeed's own handler (propagate=False) sees only what passes
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropKnownRecords) and f.level == level for f in logger.filters):
            logger.addFilter(DropKnownRecords(level, patterns))
