"""Work parts: the unit of splitting a prepare run across nodes, of resuming, and of shard naming.

Each source's inputs (sorted) are grouped into parts of about ``part_bytes``. Part ``g`` (numbered
over all sources) belongs to node ``g % num_shards``. A finished part leaves a record
``parts/<source>/part-NNNNN.json`` (written last, atomically) listing its shards, its counts and the
settings it was made with, plus the hashes of its kept documents (``.hashes.npz``) for dedup.
Inputs are identified by content: the record lists each input's path, size and sha256, so an input
edited in place (same size, even the same modification time) makes its part be redone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.outputs import OutputLedger
from data_prep.sources import input_size, list_inputs
from data_prep.starter import starter_path
from llmtrain.config.data import DataConfig, SourceConfig
from llmtrain.data.shards import ShardInfo, atomic_write_text, sha256_file
from llmtrain.distributed.logging import get_logger
from llmtrain.errors import DataError

log = get_logger(__name__)


@dataclass
class Part:
    source: SourceConfig
    index: int
    num_parts: int
    global_index: int
    files: list[Path]

    @property
    def record_path(self) -> str:
        return f"parts/{self.source.name}/part-{self.index:05d}.json"


@dataclass
class PartRecord:
    source: str
    part: int
    num_parts: int
    global_index: int
    files: list[list[Any]]
    settings: str
    tokenizer_fingerprint: str
    shards: list[ShardInfo]
    stats: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        d = dict(self.__dict__)
        d["shards"] = [s.__dict__ for s in self.shards]
        return json.dumps(d, indent=1) + "\n"

    @classmethod
    def load(cls, path: Path) -> PartRecord:
        try:
            d = json.loads(path.read_text())
            d["shards"] = [ShardInfo.from_dict(s, str(path)) for s in d["shards"]]
            return cls(**d)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{path} is not a valid part record ({e}); delete it or re-run with --overwrite") from None


def resolve_files(source: SourceConfig) -> list[Path] | None:
    """The input files of a source (fetching a starter); None when an optional source is unavailable."""
    try:
        if source.starter:
            return [starter_path(source.starter)]
        return list_inputs(source.paths, source.format)
    except DataError as e:
        if source.optional:
            log.info(f"[prepare] skipping optional source {source.name}: {e}")
            return None
        raise


def plan_parts(cfg: DataConfig) -> list[Part]:
    parts: list[Part] = []
    for source in cfg.sources:
        if source.planning_only:
            continue
        files = resolve_files(source)
        if files is None:
            continue
        groups: list[list[Path]] = [[]]
        size = 0
        for f in files:
            n = input_size(f)
            if groups[-1] and size + n > cfg.part_bytes and source.max_chars is None:
                groups.append([])
                size = 0
            groups[-1].append(f)
            size += n
        for i, g in enumerate(groups):
            parts.append(Part(source, i, len(groups), len(parts), g))
    return parts


def input_sha256(path: Path) -> str:
    """Content hash of an input file, or of every file of an input directory (names and contents)."""
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def file_list(part: Part) -> list[list[Any]]:
    """[path, size, sha256] of each input of the part: what decides whether its record is current."""
    return [[str(f), input_size(f), input_sha256(f)] for f in part.files]


def settings_fingerprint(cfg: DataConfig, source: SourceConfig, tokenizer_fp: str, dtype: str) -> str:
    """Everything that changes a part's output; a record made with other settings is redone."""
    s = {"format": source.format, "text_field": source.text_field or cfg.text_field, "dedup": cfg.dedup,
         "min_chars": cfg.min_chars, "seed": cfg.seed, "shard_tokens": cfg.shard_tokens,
         "validation_fraction": validation_fraction(cfg, source), "max_chars": source.max_chars,
         "tokenizer": tokenizer_fp, "dtype": dtype, "part_bytes": cfg.part_bytes}
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:16]


def validation_fraction(cfg: DataConfig, source: SourceConfig) -> float:
    return cfg.validation_fraction if source.validation_fraction is None else source.validation_fraction


def record_is_complete(out: Path, part: Part, settings: str, files: list[list[Any]]) -> PartRecord | None:
    """The part's record when it exists, matches the settings and the inputs' content (``files``,
    from :func:`file_list`), and its shards are intact."""
    path = out / part.record_path
    if not path.is_file():
        return None
    rec = PartRecord.load(path)
    if rec.settings != settings:
        return None
    if rec.files != files:
        changed = [f[0] for f in files if f not in rec.files]
        log.info(f"[prepare] {part.source.name} part {part.index + 1}/{part.num_parts}: inputs changed since it was "
                 f"prepared ({', '.join(changed[:3]) or 'file list'}{' ...' if len(changed) > 3 else ''}); redoing it")
        return None
    for s in rec.shards:
        f = out / s.file
        if not f.is_file() or f.stat().st_size != s.tokens * np.dtype(s.dtype).itemsize:
            return None
    return rec


def save_record(out: Path, rel: str, rec: PartRecord, hashes: dict[str, np.ndarray], ledger: OutputLedger) -> None:
    ledger.claim(rel[: -len(".json")] + ".hashes.npz")
    path = ledger.claim(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".hashes.tmp.npz")
    np.savez(tmp, **hashes)
    tmp.replace(hashes_path(path))
    atomic_write_text(path, rec.to_json())


def hashes_path(record_path: Path) -> Path:
    return record_path.with_name(record_path.stem + ".hashes.npz")


def load_hashes(record_path: Path) -> dict[str, np.ndarray]:
    with np.load(hashes_path(record_path)) as z:
        return {k: z[k] for k in z.files}
