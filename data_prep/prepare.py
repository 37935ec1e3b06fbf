"""``llmtrain prepare``: raw documents -> token shards, in parallel, streaming, resumable.

The main process reads documents in a fixed order, filters (min length, exact dedup) and assigns
each to train or validation by a seeded hash of its text; worker processes tokenize batches of
~1 MB; results come back in submission order through a bounded window, so memory stays flat and
the output is byte-identical for any number of workers.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.outputs import OutputLedger, check_output_dir, check_overlap
from data_prep.parts import (
    Part,
    PartRecord,
    file_list,
    load_hashes,
    plan_parts,
    record_is_complete,
    save_record,
    settings_fingerprint,
    validation_fraction,
)
from data_prep.sources import ReadStats, read_documents
from data_prep.tokenizer import train_tokenizer
from llmtrain.config.data import DataConfig
from llmtrain.data.shards import ShardInfo, TokenShardWriter, dtype_for_vocab
from llmtrain.data.tokenizer import Tokenizer, is_tokenizer_dir, load_tokenizer
from llmtrain.distributed.logging import get_logger
from llmtrain.errors import DataError

log = get_logger(__name__)

BATCH_CHARS = 1 << 20
SPLITS = ("train", "validation")
_worker_tok: Tokenizer | None = None


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tok
    _worker_tok = load_tokenizer(tokenizer_dir)


def _encode(texts: list[str], dtype: str) -> list[np.ndarray]:
    """Tokenize a batch and wrap every document in BOS ... EOS."""
    tok = _worker_tok
    assert tok is not None
    bos, eos = tok.bos_prefix, [tok.eos_id] if tok.eos_id >= 0 else []
    return [np.asarray(bos + ids + eos, dtype=dtype) for ids in tok.encode_batch(texts)]


def _text_hash(text: str, key: bytes = b"") -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=key).digest(), "little")


def source_inputs(parts: list[Part]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for p in parts:
        out.setdefault(p.source.name, []).extend(p.files)
    return out


def ensure_tokenizer(cfg: DataConfig, allow_train: bool = True, config_path: str = "<data config>") -> Tokenizer:
    """Load the config's tokenizer, training it from the config's sources when its directory is missing."""
    spec = cfg.tokenizer
    if spec is None:
        raise DataError("the data config has no tokenizer section; add tokenizer: {path: DIR}")
    if is_tokenizer_dir(spec.path):
        return load_tokenizer(spec.path)
    if not allow_train:
        raise DataError(f"tokenizer {spec.path} does not exist yet; train it once before the array of prepare "
                        f"jobs: `llmtrain prepare --config <data config> --tokenizer-only`")
    parts = plan_parts(cfg)
    check_overlap(cfg, source_inputs(parts), config_path, tokenizer_written=True)
    by_source: dict[str, list[Part]] = {}
    for p in parts:
        by_source.setdefault(p.source.name, []).append(p)
    if not by_source:
        raise DataError("no source with data to train the tokenizer on; add a source with starter: or path:")
    per_source = spec.sample_chars // len(by_source)

    def texts() -> Iterator[str]:
        for source_parts in by_source.values():
            taken, stats = 0, ReadStats()
            for part in source_parts:
                for f in part.files:
                    for doc in read_documents(f, part.source.format, part.source.text_field or cfg.text_field, stats):
                        yield doc[: per_source - taken]
                        taken += len(doc)
                        if taken >= per_source:
                            break
                    if taken >= per_source:
                        break
                if taken >= per_source:
                    break

    log.info(f"[prepare] tokenizer {spec.path} not found: training vocab {spec.vocab_size} on up to "
        f"{per_source:,} chars per source")
    return train_tokenizer(texts(), spec.path, vocab_size=spec.vocab_size, special_tokens=spec.special_tokens,
                           sample_sentences=spec.sample_sentences, max_chars=spec.sample_chars, seed=cfg.seed)


@dataclass
class PartCounters:
    documents_read: int = 0
    documents_kept: int = 0
    duplicates_removed: int = 0
    too_short: int = 0
    truncated_by_max_chars: int = 0


class _PartWriter:
    """Rolls shards of one (part, split) at ``shard_tokens``."""

    def __init__(self, out: Path, part: Part, split: str, dtype: np.dtype, fp: str, shard_tokens: int,
                 ledger: OutputLedger):
        self.out, self.part, self.split, self.dtype, self.fp, self.limit = out, part, split, dtype, fp, shard_tokens
        self.ledger = ledger
        self.writer: TokenShardWriter | None = None
        self.done: list[ShardInfo] = []

    def add(self, ids: np.ndarray) -> None:
        if self.writer is not None and self.writer.documents and self.writer.tokens + len(ids) > self.limit:
            self.done.append(self.writer.close())
            self.writer = None
        if self.writer is None:
            rel = f"{self.part.source.name}/{self.split}-{self.part.index:05d}-{len(self.done):04d}.bin"
            self.ledger.claim_shard(rel)
            self.writer = TokenShardWriter(self.out, rel, dtype=self.dtype, source=self.part.source.name,
                                           split=self.split, tokenizer_fingerprint=self.fp)
        self.writer.add(ids)

    def close(self) -> list[ShardInfo]:
        if self.writer is not None:
            self.done.append(self.writer.close())
            self.writer = None
        return self.done


def _clean_part_files(out: Path, part: Part, ledger: OutputLedger) -> None:
    """Remove the shards an earlier attempt at this part wrote (recorded ones only: never a user's file)."""
    prefixes = tuple(f"{part.source.name}/{split}-{part.index:05d}-" for split in SPLITS)
    for rel in sorted(ledger.recorded()):
        if rel.startswith(prefixes) and rel.endswith((".bin", ".idx")):
            (out / rel).unlink(missing_ok=True)


def process_part(cfg: DataConfig, part: Part, tok: Tokenizer, pool, workers: int, out: Path,
                 seen: set[int], ledger: OutputLedger, files: list[list]) -> PartRecord:
    """Tokenize one part into shards and return its (saved) record; ``files`` is its inputs' file_list."""
    source = part.source
    dtype = dtype_for_vocab(tok.vocab_size)
    settings = settings_fingerprint(cfg, source, tok.fingerprint, dtype.name)
    frac, key = validation_fraction(cfg, source), cfg.seed.to_bytes(8, "little", signed=True)
    text_field = source.text_field or cfg.text_field
    _clean_part_files(out, part, ledger)
    writers = {s: _PartWriter(out, part, s, dtype, tok.fingerprint, cfg.shard_tokens, ledger) for s in SPLITS}
    kept_hashes: dict[str, list[int]] = {s: [] for s in SPLITS}
    counts, read_stats = PartCounters(), ReadStats()
    tokens = {s: 0 for s in SPLITS}

    def documents() -> Iterator[tuple[str, str]]:
        chars = 0
        for f in part.files:
            for text in read_documents(f, source.format, text_field, read_stats):
                counts.documents_read += 1
                if source.max_chars is not None:
                    if chars >= source.max_chars:
                        counts.truncated_by_max_chars += 1
                        continue
                    chars += len(text)
                if len(text.strip()) < max(cfg.min_chars, 1):
                    counts.too_short += 1
                    continue
                h = _text_hash(text)
                if cfg.dedup:
                    if h in seen:
                        counts.duplicates_removed += 1
                        continue
                    seen.add(h)
                split = "validation" if _text_hash(text, key) / 2.0**64 < frac else "train"
                kept_hashes[split].append(h)
                counts.documents_kept += 1
                yield split, text

    def batches() -> Iterator[tuple[list[str], list[str]]]:
        splits, texts, size = [], [], 0
        for split, text in documents():
            splits.append(split)
            texts.append(text)
            size += len(text)
            if size >= BATCH_CHARS:
                yield splits, texts
                splits, texts, size = [], [], 0
        if texts:
            yield splits, texts

    def write(splits: list[str], arrays: list[np.ndarray]) -> None:
        for split, ids in zip(splits, arrays, strict=False):
            writers[split].add(ids)
            tokens[split] += len(ids)

    t0 = last = time.time()
    pending: deque = deque()
    for splits, texts in batches():
        if pool is None:
            write(splits, _encode(texts, dtype.name))
        else:
            pending.append((splits, pool.apply_async(_encode, (texts, dtype.name))))
            while len(pending) >= 2 * workers:
                s, res = pending.popleft()
                write(s, res.get())
        if time.time() - last > 5:
            last = time.time()
            total = sum(tokens.values())
            log.info(f"[prepare] {source.name} part {part.index + 1}/{part.num_parts}: {counts.documents_kept:,} docs, "
                f"{total:,} tokens, {total / (last - t0):,.0f} tokens/s")
    while pending:
        s, res = pending.popleft()
        write(s, res.get())
    shards = writers["train"].close() + writers["validation"].close()
    stats = {**counts.__dict__, "files": read_stats.files, "empty_files": read_stats.empty_files,
             "replaced_chars": read_stats.replaced_chars, "docs_with_replacements": read_stats.docs_with_replacements,
             "train_tokens": tokens["train"], "validation_tokens": tokens["validation"],
             "train_documents": len(kept_hashes["train"]), "validation_documents": len(kept_hashes["validation"])}
    if read_stats.examples:
        log.info(f"[prepare] {source.name}: repaired/skipped inputs, e.g. {read_stats.examples}")
    rec = PartRecord(source=source.name, part=part.index, num_parts=part.num_parts, global_index=part.global_index,
                     files=files,
                     settings=settings, tokenizer_fingerprint=tok.fingerprint, shards=shards, stats=stats)
    save_record(out, part.record_path, rec, {s: np.asarray(kept_hashes[s], dtype=np.uint64) for s in SPLITS}, ledger)
    return rec


def prepare(cfg: DataConfig, *, workers: int = 1, overwrite: bool = False, shard_index: int = 0,
            num_shards: int = 1, config_path: str = "<data config>") -> dict:
    """Prepare this node's parts; on a single node also merge into manifest.json. Returns a summary."""
    if not 0 <= shard_index < num_shards:
        raise DataError(f"--shard-index {shard_index} must be in [0, --num-shards {num_shards})")
    parts = plan_parts(cfg)
    check_overlap(cfg, source_inputs(parts), config_path, tokenizer_written=False)
    tok = ensure_tokenizer(cfg, allow_train=num_shards == 1, config_path=config_path)
    out = cfg.output_path
    check_output_dir(out, tok, overwrite, config_path)
    out.mkdir(parents=True, exist_ok=True)
    ledger = OutputLedger(out, f"node-{shard_index}")
    dtype = dtype_for_vocab(tok.vocab_size)
    mine = [p for p in parts if p.global_index % num_shards == shard_index]
    log.info(f"[prepare] {len(parts)} part(s) over {len({p.source.name for p in parts})} source(s); this node "
        f"({shard_index}/{num_shards}) does {len(mine)}; {workers} worker(s); tokenizer {tok.fingerprint[:12]} "
        f"vocab {tok.vocab_size} ({dtype.name})")
    seen: dict[str, set[int]] = {}
    pool = None
    if workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(str(tok.directory),))
    else:
        _init_worker(str(tok.directory))
    t0, done, skipped = time.time(), 0, 0
    try:
        for part in mine:
            settings = settings_fingerprint(cfg, part.source, tok.fingerprint, dtype.name)
            source_seen = seen.setdefault(part.source.name, set())
            files = file_list(part)
            rec = record_is_complete(out, part, settings, files)
            if rec is not None:
                skipped += 1
                if cfg.dedup:
                    for arr in load_hashes(out / part.record_path).values():
                        source_seen.update(arr.tolist())
                log.info(f"[prepare] {part.source.name} part {part.index + 1}/{part.num_parts}: already done, skipped")
                continue
            rec = process_part(cfg, part, tok, pool, workers, out, source_seen, ledger, files)
            done += 1
            s = rec.stats
            log.info(f"[prepare] {part.source.name} part {part.index + 1}/{part.num_parts}: {s['documents_kept']:,} docs, "
                f"{s['train_tokens']:,} train + {s['validation_tokens']:,} validation tokens in {len(rec.shards)} shard(s)")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    summary = {"parts_done": done, "parts_skipped": skipped, "seconds": time.time() - t0}
    if num_shards == 1:
        from data_prep.merge import merge

        summary["manifest"] = merge(cfg, config_path=config_path)
    else:
        log.info(f"[prepare] node {shard_index}/{num_shards} finished; when all nodes are done run "
            f"`llmtrain prepare --config {config_path} --merge`")
    return summary


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8))
