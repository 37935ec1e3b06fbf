"""Small synthetic corpora, a tiny tokenizer and a prepared data config shared by the data tests."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

WORDS = ["the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they", "you", "were", "her", "she", "there", "been", "one", "all", "we", "their", "has", "would", "when", "if", "so", "no", "will", "more", "can", "out", "up", "def", "return", "class", "import", "self", "None", "True", "print", "value", "list", "dict"]


def synthetic_docs(n: int, seed: int, min_words: int = 20, max_words: int = 200) -> list[str]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(min_words, max_words)))
        docs.append(f"Document {seed}-{i}. " + " ".join(words) + "\n")
    return docs


def write_jsonl(path: Path, docs: list[str], field: str = "text", compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs))
    if compress:
        path.write_bytes(gzip.compress(lines.encode()))
    else:
        path.write_text(lines)
    return path


def write_config(path: Path, **data) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> str:
    from data_prep.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    texts = synthetic_docs(300, seed=99) + ["def f(x):\n    return x + 1\n", "Ünïcödé 😀 <|user|> hi <|assistant|> ok"]
    train_tokenizer(texts, out, vocab_size=400, special_tokens=["<|user|>", "<|assistant|>"],
                    sample_sentences=5000, threads=1)
    return str(out)


def corpus_config(root: Path, tokenizer_path: str, **overrides) -> str:
    """Three sources: two jsonl files (with a cross-file duplicate), a txt directory, a jsonl.gz."""
    a = synthetic_docs(120, seed=1)
    write_jsonl(root / "raw/alpha/part0.jsonl", a[:60] + [a[5]])
    write_jsonl(root / "raw/alpha/part1.jsonl", a[60:] + [a[70], a[10]])
    for i, d in enumerate(synthetic_docs(40, seed=2)):
        (root / "raw/beta").mkdir(parents=True, exist_ok=True)
        (root / f"raw/beta/doc{i:03d}.txt").write_text(d)
    write_jsonl(root / "raw/gamma.jsonl.gz", synthetic_docs(80, seed=3, max_words=60), field="body", compress=True)
    cfg = {
        "tokenizer": {"path": tokenizer_path, "vocab_size": 400},
        "output_dir": str(root / "out"),
        "shard_tokens": 3000,
        "validation_fraction": 0.1,
        "seed": 7,
        "sources": [
            {"name": "alpha", "path": str(root / "raw/alpha"), "weight": 0.5},
            {"name": "beta", "path": str(root / "raw/beta"), "weight": 0.3},
            {"name": "gamma", "path": str(root / "raw/gamma.jsonl.gz"), "text_field": "body", "weight": 0.2},
        ],
    }
    for k, v in overrides.items():
        cfg[k] = v
    return write_config(root / "data.yaml", **cfg)


def run_prepare(config: str, **kw):
    from data_prep.prepare import prepare
    from llmtrain.config.data import load_data_config

    with captured_logs() as logs:
        summary = prepare(load_data_config(config), **kw)
    return summary, logs


@contextlib.contextmanager
def captured_logs() -> Iterator[list[str]]:
    """The messages logged under ``llmtrain`` (data preparation's progress lines) while the block runs."""
    from llmtrain.distributed.logging import get_logger

    logs: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logs.append(record.getMessage())

    root, keep = get_logger("llmtrain"), Keep()
    root.addHandler(keep)
    try:
        yield logs
    finally:
        root.removeHandler(keep)


@pytest.fixture(scope="session")
def prepared_corpus(tmp_path_factory, tiny_tokenizer) -> str:
    root = tmp_path_factory.mktemp("corpus")
    config = corpus_config(root, tiny_tokenizer)
    run_prepare(config, workers=1)
    return config
