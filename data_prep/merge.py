"""Combine the part records of one or many prepare runs into ``manifest.json``.

Runs split with ``--shard-index/--num-shards`` deduplicate only within their own parts; here the
later copies of documents seen in an earlier part are dropped (their shards rewritten), so the
merged result holds the same documents as a single-node run: first occurrence per source wins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.outputs import OutputLedger
from data_prep.parts import PartRecord, hashes_path, load_hashes, save_record
from llmtrain.config.data import DataConfig
from llmtrain.data.shards import MANIFEST, Manifest, ShardInfo, ShardReader, TokenShardWriter, write_manifest
from llmtrain.data.tokenizer import load_tokenizer
from llmtrain.distributed.logging import get_logger
from llmtrain.errors import DataError

log = get_logger(__name__)

STAT_ORDER = ("files", "empty_files", "documents_read", "too_short", "duplicates_removed", "docs_with_replacements",
              "replaced_chars", "train_documents", "validation_documents", "train_tokens", "validation_tokens")


def _records(out: Path, cfg: DataConfig) -> list[PartRecord]:
    records: list[PartRecord] = []
    missing: list[str] = []
    for source in cfg.sources:
        if source.planning_only:
            continue
        found = {r.part: r for r in (PartRecord.load(p) for p in sorted((out / "parts" / source.name).glob("part-*.json")))}
        if not found:
            if source.optional:
                continue
            missing.append(f"{source.name}: no part finished")
            continue
        n = next(iter(found.values())).num_parts
        gaps = [i for i in range(n) if i not in found]
        if gaps:
            missing.append(f"{source.name}: parts {gaps[:10]} of {n} not finished")
        records += [found[i] for i in sorted(found) if i < n]
    if missing:
        raise DataError(f"cannot merge {out}: {'; '.join(missing)}. Run the missing `llmtrain prepare --config ... "
                        f"--shard-index I --num-shards N` jobs (part g belongs to index g % N), then merge again")
    return records


def _rewrite_without(out: Path, rec: PartRecord, split: str, keep: np.ndarray) -> int:
    """Rewrite the part's shards of ``split`` keeping documents where ``keep``; returns documents dropped."""
    offset, new = 0, []
    for info in rec.shards:
        if info.split != split:
            new.append(info)
            continue
        mask = keep[offset: offset + info.documents]
        offset += info.documents
        if mask.all():
            new.append(info)
            continue
        reader = ShardReader(out, info)
        writer = TokenShardWriter(out, info.file, dtype=np.dtype(info.dtype), source=info.source, split=split,
                                  tokenizer_fingerprint=info.tokenizer_fingerprint)
        offsets = np.asarray(reader.offsets)
        for d in np.flatnonzero(mask):
            writer.add(np.asarray(reader.tokens[offsets[d]: offsets[d + 1]]))
        del reader
        new.append(writer.close())
    rec.shards = new
    dropped = int((~keep).sum())
    rec.stats["duplicates_removed"] += dropped
    rec.stats[f"{split}_documents"] -= dropped
    rec.stats[f"{split}_tokens"] = sum(s.tokens for s in new if s.split == split)
    return dropped


def _dedup_across_parts(out: Path, records: list[PartRecord], ledger: OutputLedger) -> int:
    dropped = 0
    by_source: dict[str, list[PartRecord]] = {}
    for r in records:
        by_source.setdefault(r.source, []).append(r)
    for recs in by_source.values():
        if len(recs) < 2:
            continue
        hashes = [load_hashes(out / f"parts/{r.source}/part-{r.part:05d}.json") for r in recs]
        for split in ("train", "validation"):
            arrays = [h[split] for h in hashes]
            if not sum(len(a) for a in arrays):
                continue
            cat = np.concatenate(arrays)
            keep = np.zeros(len(cat), dtype=bool)
            keep[np.unique(cat, return_index=True)[1]] = True
            start = 0
            for rec, h, a in zip(recs, hashes, arrays, strict=False):
                k = keep[start: start + len(a)]
                start += len(a)
                if not k.all():
                    dropped += _rewrite_without(out, rec, split, k)
                    h[split] = a[k]
                    path = out / f"parts/{rec.source}/part-{rec.part:05d}.json"
                    hashes_path(path).unlink()
                    save_record(out, f"parts/{rec.source}/part-{rec.part:05d}.json", rec, h, ledger)
    return dropped


def merge(cfg: DataConfig, *, config_path: str = "<data config>") -> Manifest:
    """Write manifest.json from all finished parts and print the per-source report."""
    out = cfg.output_path
    ledger = OutputLedger(out, "merge")
    records = _records(out, cfg)
    fps = {r.tokenizer_fingerprint for r in records}
    if len(fps) > 1:
        raise DataError(f"{out}: parts were made with different tokenizers ({', '.join(f[:12] for f in fps)}); "
                        f"re-run `llmtrain prepare --config {config_path} --overwrite`")
    if cfg.dedup:
        n = _dedup_across_parts(out, records, ledger)
        if n:
            log.info(f"[prepare] merge: dropped {n:,} documents duplicated across parts")
    assert cfg.tokenizer is not None
    tok = load_tokenizer(cfg.tokenizer.path)
    if fps and fps != {tok.fingerprint}:
        raise DataError(f"{out} holds shards of tokenizer {next(iter(fps))[:12]} but {cfg.tokenizer.path} is "
                        f"{tok.fingerprint[:12]}; re-run `llmtrain prepare --config {config_path} --overwrite`")
    stats: dict[str, dict[str, int]] = {}
    shards: list[ShardInfo] = []
    for r in records:
        shards += r.shards
        agg = stats.setdefault(r.source, {})
        for k, v in r.stats.items():
            agg[k] = agg.get(k, 0) + v
    check_source_health(cfg, stats, config_path)
    manifest = Manifest(tokenizer_fingerprint=tok.fingerprint, vocab_size=tok.vocab_size,
                        tokenizer_dir=str(Path(cfg.tokenizer.path).resolve()), shards=shards, stats=stats)
    ledger.claim(MANIFEST)
    path = write_manifest(out, manifest)
    log.info(report(stats))
    log.info(f"[prepare] wrote {path} ({len(shards)} shards, {sum(s.tokens for s in shards):,} tokens)")
    return manifest


def check_source_health(cfg: DataConfig, stats: dict[str, dict[str, int]], config_path: str) -> None:
    """Refuse a source that yielded no document, or whose documents were mostly undecodable bytes: a
    wrong path, format or encoding would otherwise train on nothing or on U+FFFD. The source's
    ``allow_empty`` / ``max_undecodable_fraction`` accept such a source knowingly."""
    problems = []
    for source in cfg.sources:
        s = stats.get(source.name)
        if s is None:
            continue
        read, bad = s.get("documents_read", 0), s.get("docs_with_replacements", 0)
        kept = s.get("train_documents", 0) + s.get("validation_documents", 0)
        if (read == 0 or kept == 0) and not source.allow_empty:
            problems.append(f"source {source.name} has no document ({s.get('files', 0)} file(s), "
                            f"{s.get('empty_files', 0)} empty, {read} document(s) read, {kept} kept after filters); "
                            f"check its path/format/text_field, or set `allow_empty: true` on it")
        elif read and bad / read > source.max_undecodable_fraction:
            problems.append(f"source {source.name}: {bad} of {read} documents ({bad / read:.0%}) had undecodable bytes "
                            f"({s.get('replaced_chars', 0)} replaced), above max_undecodable_fraction "
                            f"{source.max_undecodable_fraction}; is it UTF-8 text? Convert it (e.g. iconv -f cp1252 -t "
                            f"utf-8) or raise `max_undecodable_fraction` on the source")
    if problems:
        raise DataError(f"{'; '.join(problems)} (in {config_path}; no manifest.json was written)")


def report(stats: dict[str, dict[str, int]]) -> str:
    cols = [c for c in STAT_ORDER if any(c in s for s in stats.values())]
    head = ["source"] + cols
    rows = [[name] + [f"{s.get(c, 0):,}" for c in cols] for name, s in stats.items()]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [head] + rows)
