"""Run lm-eval-harness offline on an exported Hugging Face directory and our local task files.

Task YAMLs live in ``configs/eval/<name>.yaml`` and name their data by file name only
(``dataset_kwargs.data_files.test: X.jsonl``). Before lm-eval sees them, each YAML is copied to a
temporary include directory with the data path made absolute under ``$LLMTRAIN_CACHE/eval``, and
missing data is built first: the sentiment test split from the Rotten Tomatoes set, BIG-bench tasks
from the bigbench sdist. Nothing touches the network except the one-time package downloads, and
``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE`` keep ``datasets``/``transformers`` from trying.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from llmtrain.data.fetch import cache_dir
from llmtrain.data.finetune_sets import rotten_tomatoes
from llmtrain.errors import UserError

TASK_DIR = Path(__file__).resolve().parents[2] / "configs" / "eval"
SENTIMENT_FILE = "sentiment_rt_test.jsonl"


def sentiment_jsonl() -> Path:
    """The by-movie Rotten Tomatoes test split as rows ``{"text", "gold"}`` (0 rotten/negative, 1 fresh/positive)."""
    path = cache_dir() / "eval" / SENTIMENT_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"text": r["text"], "gold": r["label"], "movie": r["movie"]} for r in rotten_tomatoes()["test"]]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(path)
    return path


def ensure_data(file_name: str) -> Path:
    """Build the jsonl a task YAML names (sentiment or ``bigbench_<task>.jsonl``) if it is missing."""
    if file_name == SENTIMENT_FILE:
        return sentiment_jsonl()
    if file_name.startswith("bigbench_") and file_name.endswith(".jsonl"):
        from data_prep.bigbench import bigbench_jsonl

        return bigbench_jsonl(file_name[len("bigbench_"):-len(".jsonl")])
    path = cache_dir() / "eval" / file_name
    if not path.is_file():
        raise UserError(f"lm-eval data file {path} does not exist and llmtrain does not know how to build it; "
                        f"write it there or use a sentiment_rt / bigbench_<task> YAML")
    return path


def available_tasks(task_dir: Path = TASK_DIR) -> dict[str, Path]:
    """``{yaml stem: path}`` of the shipped task YAMLs."""
    return {p.stem: p for p in sorted(task_dir.glob("*.yaml"))}


def stage_tasks(names: list[str], include_dir: Path, task_dir: Path = TASK_DIR) -> list[str]:
    """Copy the YAMLs of ``names`` into ``include_dir`` with absolute data paths; return lm-eval task names."""
    known = available_tasks(task_dir)
    missing = [n for n in names if n not in known]
    if missing:
        raise UserError(f"unknown lm-eval task(s) {missing}; shipped tasks in {task_dir}: {', '.join(known)}")
    task_names = []
    for name in names:
        spec = yaml.safe_load(known[name].read_text())
        files = spec.get("dataset_kwargs", {}).get("data_files", {})
        for split, file_name in files.items():
            files[split] = str(ensure_data(Path(file_name).name))
        (include_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        task_names.append(spec["task"])
    return task_names


def run_lm_eval(hf_dir: str | Path, names: list[str], *, limit: int | None = None, batch_size: int = 8,
                device: str = "cpu", dtype: str = "float32") -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from lm-eval's ``simple_evaluate`` on the HF export in ``hf_dir``."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("lm-eval is not installed; `pip install 'lm-eval>=0.4'` (or `pip install -e .[eval]`)") from None
    with tempfile.TemporaryDirectory(prefix="llmtrain-lm-eval-") as tmp:
        tasks = stage_tasks(names, Path(tmp))
        manager = TaskManager(include_path=tmp, include_defaults=False)
        results: Any = lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(hf_dir), "dtype": dtype, "trust_remote_code": False},
            tasks=tasks, task_manager=manager, batch_size=batch_size, device=device, limit=limit,
            log_samples=False, bootstrap_iters=0)
    out: dict[str, dict[str, float]] = {}
    for task, metrics in (results or {}).get("results", {}).items():
        out[task] = {k.split(",")[0]: float(v) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and "stderr" not in k}
    return out
