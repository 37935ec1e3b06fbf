"""prepare never writes into or deletes its inputs, deletes only what it recorded, and notices inputs
edited in place (same size, same modification time) by their content hash."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from corpus_fixtures import corpus_config, run_prepare, synthetic_docs, write_jsonl

from data_prep.outputs import LEDGER_DIR
from llmtrain.config.data import load_data_config
from llmtrain.data.shards import read_manifest
from llmtrain.errors import DataError


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_output_dir_inside_a_source_is_refused(tmp_path, tiny_tokenizer):
    config = corpus_config(tmp_path, tiny_tokenizer, output_dir=str(tmp_path / "raw/beta/shards"))
    before = hashes(tmp_path / "raw")
    with pytest.raises(DataError, match=r"source beta: input .*raw/beta contains output_dir .*raw/beta/shards; "
                                        r"prepare never writes into or deletes its inputs"):
        run_prepare(config, workers=1, overwrite=True)
    assert hashes(tmp_path / "raw") == before
    assert not (tmp_path / "raw/beta/shards").exists()


def test_source_inside_output_dir_is_refused_and_its_part_like_files_survive(tmp_path, tiny_tokenizer):
    """The reported bug: an input directory inside output_dir holding files named like prepare's parts."""
    out = tmp_path / "out"
    write_jsonl(out / "alpha/train-00000-0000.jsonl", synthetic_docs(30, seed=4))
    (out / "alpha/train-00000-0001.bin").write_bytes(b"user data, not a shard")
    config = corpus_config(tmp_path, tiny_tokenizer, sources=[{"name": "alpha", "path": str(out / "alpha")}])
    before = hashes(out)
    for overwrite in (False, True):
        with pytest.raises(DataError, match=r"source alpha: input .*out/alpha.* is inside output_dir .*out; "):
            run_prepare(config, workers=1, overwrite=overwrite)
    assert hashes(out) == before


def test_overwrite_removes_only_recorded_outputs(tmp_path, tiny_tokenizer):
    config = corpus_config(tmp_path, tiny_tokenizer)
    out = tmp_path / "out"
    run_prepare(config, workers=1)
    ledger = sorted((out / LEDGER_DIR).glob("*.txt"))
    assert [p.name for p in ledger] == ["merge.txt", "node-0.txt"]
    assert "manifest.json" in ledger[0].read_text() and "alpha/train-00000-0000.bin" in ledger[1].read_text()
    # files a user put there, one named like a shard of a part prepare never made
    (out / "notes.txt").write_text("mine")
    (out / "alpha/train-00099-0000.bin").write_bytes(b"also mine")
    (out / "keep").mkdir()
    (out / "keep/data.jsonl").write_text("{}\n")
    inputs_before, user_before = hashes(tmp_path / "raw"), {k: v for k, v in hashes(out).items()
                                                            if k in ("notes.txt", "alpha/train-00099-0000.bin", "keep/data.jsonl")}
    first = [s.sha256 for s in read_manifest(out).shards]
    summary, logs = run_prepare(config, workers=1, overwrite=True)
    assert summary["parts_done"] == 3 and any("--overwrite: removed" in line for line in logs)
    assert [s.sha256 for s in read_manifest(out).shards] == first
    after = hashes(out)
    assert {k: after[k] for k in user_before} == user_before
    assert hashes(tmp_path / "raw") == inputs_before


def test_a_file_prepare_did_not_write_is_never_overwritten(tmp_path, tiny_tokenizer):
    config = corpus_config(tmp_path, tiny_tokenizer)
    foreign = tmp_path / "out/alpha/train-00000-0000.bin"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"someone else's file")
    with pytest.raises(DataError, match=r"out/alpha/train-00000-0000.idx exists|out/alpha/train-00000-0000.bin exists "
                                        r"but was not written by llmtrain prepare"):
        run_prepare(config, workers=1)
    assert foreign.read_bytes() == b"someone else's file"


def test_an_input_edited_in_place_is_noticed_by_content(tmp_path, tiny_tokenizer):
    config = corpus_config(tmp_path, tiny_tokenizer)
    run_prepare(config, workers=1)
    out = load_data_config(config).output_path
    before = {s.file: s.sha256 for s in read_manifest(out).shards}
    doc = tmp_path / "raw/beta/doc000.txt"
    stat = doc.stat()
    text = doc.read_text()
    doc.write_text(text.replace("Document", "Dokument", 1))  # same size
    os.utime(doc, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same modification time
    assert doc.stat().st_size == stat.st_size
    summary, logs = run_prepare(config, workers=1)
    assert summary["parts_done"] == 1 and summary["parts_skipped"] == 2
    assert any("beta part 1/1: inputs changed since it was prepared" in line and "doc000.txt" in line for line in logs)
    after = {s.file: s.sha256 for s in read_manifest(out).shards}
    assert [f for f in after if after[f] != before.get(f)] and all(
        after[f] == before[f] for f in after if not f.startswith("beta/"))


def test_empty_and_undecodable_sources_are_refused_with_counts(tmp_path, tiny_tokenizer):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/a.txt").write_text("")
    (tmp_path / "empty/b.txt").write_text("   \n")
    (tmp_path / "latin").mkdir()
    for i, d in enumerate(synthetic_docs(5, seed=6)):
        (tmp_path / f"latin/{i}.txt").write_bytes(d.encode() + "caf\u00e9 na\u00efve\n".encode("cp1252"))
    good = {"name": "good", "path": str(write_jsonl(tmp_path / "good.jsonl", synthetic_docs(20, seed=5)))}
    config = corpus_config(tmp_path, tiny_tokenizer, sources=[good, {"name": "empty", "path": str(tmp_path / "empty")}])
    with pytest.raises(DataError, match=r"source empty has no document \(2 file\(s\), 2 empty, 0 document\(s\) read, "
                                        r"0 kept after filters\); .*set `allow_empty: true`"):
        run_prepare(config, workers=1)
    assert not (tmp_path / "out/manifest.json").exists()
    config = corpus_config(tmp_path, tiny_tokenizer, sources=[good, {"name": "latin", "path": str(tmp_path / "latin")}])
    with pytest.raises(DataError, match=r"source latin: 5 of 5 documents \(100%\) had undecodable bytes \(10 replaced\), "
                                        r"above max_undecodable_fraction 0.5; .*iconv -f cp1252"):
        run_prepare(config, workers=1)
    config = corpus_config(tmp_path, tiny_tokenizer, sources=[
        good, {"name": "empty", "path": str(tmp_path / "empty"), "allow_empty": True},
        {"name": "latin", "path": str(tmp_path / "latin"), "max_undecodable_fraction": 1.0}])
    run_prepare(config, workers=1)
    stats = read_manifest(tmp_path / "out").stats
    assert stats["empty"]["documents_read"] == 0 and stats["latin"]["docs_with_replacements"] == 5
