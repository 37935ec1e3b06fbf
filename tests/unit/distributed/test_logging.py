"""The rank-aware logger: rank 0 only, message text as is, INFO on stdout and warnings on stderr."""

from __future__ import annotations

import logging
import subprocess
import sys

from llmtrain.distributed.logging import Rank0Filter, get_logger


def _emitted(monkeypatch, rank: str, **extra) -> list[str]:
    monkeypatch.setenv("RANK", rank)
    log = get_logger("unit_test_logger")
    root = logging.getLogger("llmtrain")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep()
    keep.addFilter(Rank0Filter())
    root.addHandler(keep)
    try:
        log.info("hello %d", 7, **extra)
    finally:
        root.removeHandler(keep)
    return seen


def test_logger_prints_on_rank0_only(monkeypatch):
    assert get_logger("x").name == "llmtrain.x" and get_logger("llmtrain.data").name == "llmtrain.data"
    assert _emitted(monkeypatch, "0") == ["hello 7"]
    assert _emitted(monkeypatch, "1") == []
    assert _emitted(monkeypatch, "1", extra={"all_ranks": True}) == ["hello 7"]


def test_console_shows_plain_messages_on_the_right_stream(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    log = get_logger("console_test")
    log.info("[llmtrain] step %d done", 3)
    log.warning("[llmtrain] careful")
    out, err = capsys.readouterr()  # streams are looked up per record, so capture works after set-up
    assert "[llmtrain] step 3 done\n" in out and "careful" not in out
    assert "[llmtrain] careful\n" in err


def test_a_fresh_process_logs_without_set_up_and_without_torch():
    code = ("import sys; from llmtrain.distributed.logging import get_logger; "
            "get_logger('llmtrain.data_prep').info('[prepare] hi'); "
            "print('torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"RANK": "0", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[prepare] hi\n" and proc.stderr.strip() == "False"
