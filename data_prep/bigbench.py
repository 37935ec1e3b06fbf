"""Convert one BIG-bench multiple-choice task into local jsonl for lm-eval-harness.

BIG-bench ships as the ``bigbench==1.0.0`` sdist (358 MB) on PyPI; it is fetched once into the cache
and the task's ``bigbench/benchmark_tasks/<task>/task.json`` is read by streaming the tar, without
unpacking anything else. Each example with ``target_scores`` becomes one row
``{"input", "choices", "gold"}``; the task's own prefixes are kept so the prompt reads as intended.

These tasks carry BIG-bench's canary string and must never be mixed into pretraining data; they
land in ``<cache>/eval/``, which no data config reads.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from llmtrain.data.fetch import cache_dir, pip_download
from llmtrain.errors import DataError

BIGBENCH = ("bigbench", "1.0.0")
DEFAULT_TASK = "human_organs_senses"


def _member(task: str) -> str:
    return f"bigbench-{BIGBENCH[1]}/bigbench/benchmark_tasks/{task}/task.json"


def read_task_json(task: str, sdist: Path | None = None) -> dict[str, Any]:
    """The parsed ``task.json`` of ``task`` read from the sdist tar (streamed, stops at the member)."""
    sdist = sdist or pip_download(*BIGBENCH, sdist=True)
    want, names = _member(task), []
    with tarfile.open(sdist, "r:gz") as tar:
        for m in tar:
            if m.name == want:
                f = tar.extractfile(m)
                assert f is not None
                return json.load(f)
            parts = m.name.split("/")
            if len(parts) == 5 and parts[-1] == "task.json":
                names.append(parts[3])
    raise DataError(f"BIG-bench has no JSON task {task!r}; JSON tasks include: {', '.join(sorted(names)[:40])} ... "
                    f"(small multiple-choice ones: {DEFAULT_TASK}, known_unknowns, sentence_ambiguity)")


def convert_examples(task_json: dict[str, Any]) -> list[dict[str, Any]]:
    """Multiple-choice rows: ``input`` with the task's prefixes, ``choices``, ``gold`` = best-scored choice."""
    name = task_json.get("name", "?")
    prefix = task_json.get("task_prefix", "")
    in_prefix = task_json.get("example_input_prefix", "\nQ: ")
    out_prefix = task_json.get("example_output_prefix", "\nA: ")
    rows = []
    for ex in task_json.get("examples", []):
        scores = ex.get("target_scores")
        if not scores:
            continue
        choices = list(scores)
        best = max(scores.values())
        if list(scores.values()).count(best) != 1:
            continue  # several right answers: not a single-gold multiple-choice item
        text = f"{prefix}{in_prefix}{ex['input']}{out_prefix}".lstrip("\n").rstrip(" ")
        rows.append({"input": text, "choices": choices, "gold": choices.index(next(c for c in choices if scores[c] == best))})
    if not rows:
        raise DataError(f"BIG-bench task {name!r} has no multiple-choice examples (target_scores); pick a "
                        f"multiple-choice task such as {DEFAULT_TASK}")
    return rows


def bigbench_jsonl(task: str = DEFAULT_TASK, out_dir: str | Path | None = None) -> Path:
    """Path of the converted jsonl (cached in ``<cache>/eval``; also copied to ``out_dir`` if given)."""
    cached = cache_dir() / "eval" / f"bigbench_{task}.jsonl"
    if not cached.is_file():
        rows = convert_examples(read_task_json(task))
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(cached)
    if out_dir is None:
        return cached
    out = Path(out_dir) / cached.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(cached.read_bytes())
    return out
