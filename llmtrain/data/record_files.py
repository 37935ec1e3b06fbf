"""The user's fine-tuning files read through the ``datasets`` library: one reader for every local format.

- files: ``.jsonl`` / ``.json`` (one object a line, or a JSON array), ``.csv`` (header row; every
  column read as text, in ``finetune.csv_encoding``), ``.parquet``, ``.arrow``;
- a ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` directory.

Rows come back as plain dicts with null fields dropped (``datasets`` gives every row every column of
the file) and an origin (``FILE row N``, 1-based) under :data:`ORIGIN_KEY` for error messages.
Input files are only read; ``datasets`` keeps its Arrow cache in its own cache directory.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from llmtrain.data.record_layouts import ORIGIN_KEY
from llmtrain.errors import DataError

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
SAVED_SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
                     "test": "test"}


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a directory written by ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def read_file(path: Path, *, encoding: str = "utf-8") -> list[dict[str, Any]]:
    """Every row of one data file (format by suffix), tagged with its origin."""
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist; give finetune.dataset as a file, a directory with "
                        f"train/validation/test files, a save_to_disk directory, or a named set")
    builder = BUILDERS.get(path.suffix)
    if builder is None:
        raise DataError(f"dataset file {path} has suffix {path.suffix!r}; use one of {', '.join(BUILDERS)} "
                        f"(or a save_to_disk directory)")
    import datasets

    datasets.disable_progress_bars()
    kwargs: dict[str, Any] = {}
    if builder == "csv":
        kwargs = {"encoding": encoding, "keep_default_na": False, "na_filter": False,
                  "features": datasets.Features({c: datasets.Value("string") for c in _csv_header(path, encoding)})}
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", keep_in_memory=True, **kwargs)
    except Exception as e:  # datasets wraps parser errors in several types; all mean "this file is malformed"
        raise DataError(f"{path} cannot be read as {builder}: {_first_line(e)}{_bad_json_line(path, builder)}") from None
    return tag_rows(ds.to_list(), str(path))


def read_saved(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The splits of a ``save_to_disk`` directory (a lone Dataset is the ``train`` split)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
    except Exception as e:
        raise DataError(f"{path} cannot be read as a save_to_disk dataset: {_first_line(e)}") from None
    if isinstance(loaded, datasets.Dataset):
        return {"train": tag_rows(loaded.to_list(), str(path))}
    out: dict[str, list[dict[str, Any]]] = {}
    for name, ds in loaded.items():
        split = SAVED_SPLIT_NAMES.get(name)
        if split is None:
            raise DataError(f"{path} has split {name!r}; fine-tuning reads {sorted(SAVED_SPLIT_NAMES)}. Rename it "
                            f"(DatasetDict keys) or save the splits you want")
        out[split] = tag_rows(ds.to_list(), f"{path} [{name}]")
    return out


def tag_rows(rows: list[dict[str, Any]], origin: str) -> list[dict[str, Any]]:
    return [{**{k: v for k, v in r.items() if v is not None}, ORIGIN_KEY: f"{origin} row {n}"}
            for n, r in enumerate(rows, 1)]


def _csv_header(path: Path, encoding: str) -> list[str]:
    try:
        with path.open(newline="", encoding=encoding) as f:
            return next(csv.reader(f), [])
    except (UnicodeDecodeError, LookupError) as e:
        raise DataError(f"{path} cannot be decoded as {encoding!r} ({e}); set finetune.csv_encoding to the file's "
                        f"encoding (e.g. latin-1, cp1252, utf-8-sig)") from None


def _bad_json_line(path: Path, builder: str) -> str:
    """`` (line N: ...)`` naming the first line of a jsonl file that is not a JSON object; '' if none is."""
    if builder != "json" or path.stat().st_size > 1 << 30:
        return ""
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict | list):
                    return f" (line {n} is not a JSON object; write one object per line)"
            except json.JSONDecodeError as e:
                if n == 1 and line.lstrip().startswith("["):
                    return " (a JSON array file must be valid JSON as a whole)"
                return f" (line {n} is not valid JSON: {e.msg}; write one JSON object per line)"
    return ""


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
