"""Known third-party noise is dropped message by message; everything else from the same sources still shows."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

from llmtrain.distributed.noise import KNOWN_LOG_RECORDS, KNOWN_WARNINGS, silence_known_noise

DEPRECATED = "`torch.distributed.all_gather_into_tensor` is deprecated. Please use `torch.distributed.all_gather_single` instead."


def _shown(message: str, category: type[Warning], module: str) -> bool:
    """Whether a warning raised as if from ``module`` reaches the user under the current filters."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit(message, category, filename=f"/site-packages/{module.replace('.', '/')}.py",
                               lineno=83, module=module, registry={})
    return bool(caught)


def test_known_warnings_are_dropped_and_nothing_else():
    silence_known_noise()
    silence_known_noise()  # idempotent: one filter per entry
    assert not _shown(DEPRECATED, FutureWarning, "torch.distributed.c10d_logger")
    assert not _shown(DEPRECATED.replace("all_gather_into_tensor", "reduce_scatter_tensor"), FutureWarning,
                      "torch.distributed.c10d_logger")
    # the same text from another module, another category, or another message of that module: shown
    assert _shown(DEPRECATED, FutureWarning, "mypackage.c10d_logger")
    assert _shown(DEPRECATED, FutureWarning, "torch.distributed.c10d_logger_extra")
    assert _shown(DEPRECATED, UserWarning, "torch.distributed.c10d_logger")
    assert _shown("`torch.distributed.broadcast` is deprecated", FutureWarning, "torch.distributed.c10d_logger")
    assert len([f for f in warnings.filters if f[0] == "ignore" and f[2] is FutureWarning
                and f[1] is not None and "all_gather_into_tensor" in f[1].pattern]) == 1


def test_deepspeed_logger_drops_only_the_known_record():
    silence_known_noise()
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("DeepSpeed")
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("**** You are using ZeRO with an untested optimizer, proceed with caution *****")
        logger.warning("zero_optimization.stage 3 needs more memory than you have")
        logger.error("You are using ZeRO with an untested optimizer")  # another level: not ours to drop
        logging.getLogger("DeepSpeed.child").warning("You are using ZeRO with an untested optimizer")
    finally:
        logger.removeHandler(handler)
    assert seen == ["zero_optimization.stage 3 needs more memory than you have",
                    "You are using ZeRO with an untested optimizer",
                    "You are using ZeRO with an untested optimizer"]


def test_every_entry_says_why_and_is_narrow():
    for entry in (*KNOWN_WARNINGS, *KNOWN_LOG_RECORDS):
        assert len(entry.why) > 40 and entry.message not in ("", ".*")
    assert all(w.category is not Warning and w.module for w in KNOWN_WARNINGS)


def test_the_real_deepspeed_warning_is_silenced_by_the_cli_entry():
    """DeepSpeed's own logger object, after `import deepspeed` set up its handler: the known record is gone,
    another warning still prints."""
    code = ("import llmtrain.cli as c; from llmtrain.distributed.noise import silence_known_noise; "
            "silence_known_noise(); from deepspeed.utils.logging import logger; "
            "logger.warning('**** You are using ZeRO with an untested optimizer, proceed with caution *****'); "
            "logger.warning('something else')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""})
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "untested optimizer" not in out and "something else" in out
