import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from corpus_fixtures import captured_logs, corpus_config, run_prepare, synthetic_docs, write_jsonl

from data_prep.merge import merge
from llmtrain.config.data import load_data_config
from llmtrain.data.shards import ShardReader, read_manifest
from llmtrain.errors import DataError


def _manifest(config):
    return read_manifest(load_data_config(config).output_path)


def _streams(config):
    """(source, split) -> (all tokens, document lengths) concatenated over shards."""
    cfg = load_data_config(config)
    m = _manifest(config)
    out = {}
    for key in {(s.source, s.split) for s in m.shards}:
        readers = [ShardReader(cfg.output_path, s) for s in m.select(*key)]
        out[key] = (np.concatenate([np.asarray(r.tokens) for r in readers]).tolist(),
                    np.concatenate([r.document_lengths() for r in readers]).tolist())
    return out


def test_counts_split_and_bos_eos(prepared_corpus):
    m = _manifest(prepared_corpus)
    alpha = m.stats["alpha"]
    assert alpha["documents_read"] == 123 and alpha["duplicates_removed"] == 3
    assert alpha["train_documents"] + alpha["validation_documents"] == 120
    assert 0 < alpha["validation_documents"] < 30  # ~10% held out
    assert m.stats["beta"]["files"] == 40 and m.stats["gamma"]["documents_read"] == 80
    shard = m.select("alpha", "train")[0]
    r = ShardReader(load_data_config(prepared_corpus).output_path, shard, verify=True)
    starts, ends = np.asarray(r.offsets[:-1]), np.asarray(r.offsets[1:]) - 1
    assert (np.asarray(r.tokens)[starts] == 1).all() and (np.asarray(r.tokens)[ends] == 2).all()
    assert all(s.tokens <= 3000 for s in m.shards) and len(m.select("alpha", "train")) >= 2  # bounded shards
    assert {s.dtype for s in m.shards} == {"uint16"}


def test_deterministic_and_rerun_skips(tmp_path, tiny_tokenizer, prepared_corpus):
    config = corpus_config(tmp_path, tiny_tokenizer)
    _, logs = run_prepare(config, workers=1)
    assert [s.sha256 for s in _manifest(config).shards] == [s.sha256 for s in _manifest(prepared_corpus).shards]
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.bin")}
    summary, logs = run_prepare(config, workers=1)
    assert summary["parts_skipped"] == 3 and summary["parts_done"] == 0
    assert sum("already done, skipped" in line for line in logs) == 3
    assert first == {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.bin")}


def test_parallel_equals_single_worker(tmp_path, tiny_tokenizer, prepared_corpus):
    config = corpus_config(tmp_path, tiny_tokenizer)
    run_prepare(config, workers=2)
    assert [s.sha256 for s in _manifest(config).shards] == [s.sha256 for s in _manifest(prepared_corpus).shards]


def test_num_shards_and_merge_equal_single_prepare(tmp_path, tiny_tokenizer):
    # small parts: alpha's two files land in different parts, and on different nodes
    single = corpus_config(tmp_path / "a", tiny_tokenizer, part_bytes=2000)
    run_prepare(single, workers=1)
    multi = corpus_config(tmp_path / "b", tiny_tokenizer, part_bytes=2000)
    for i in range(3):
        _, logs = run_prepare(multi, workers=1, shard_index=i, num_shards=3)
        assert "--merge" in logs[-1]
    assert not (tmp_path / "b/out/manifest.json").exists()
    with captured_logs() as logs:
        merge(load_data_config(multi))
    assert any("dropped 1 documents duplicated across parts" in line for line in logs)
    assert _streams(single) == _streams(multi)
    assert _manifest(single).stats["alpha"]["duplicates_removed"] == _manifest(multi).stats["alpha"]["duplicates_removed"] == 3


def test_merge_reports_missing_parts(tmp_path, tiny_tokenizer):
    config = corpus_config(tmp_path, tiny_tokenizer)
    run_prepare(config, workers=1, shard_index=0, num_shards=2)
    with pytest.raises(DataError, match=r"beta: no part finished.*--shard-index I --num-shards N"):
        merge(load_data_config(config))


def test_refuses_other_tokenizer_unless_overwrite(tmp_path, tiny_tokenizer):
    config = corpus_config(tmp_path, tiny_tokenizer)
    run_prepare(config, workers=1)
    data = yaml.safe_load(Path(config).read_text())
    data["tokenizer"]["path"] = str(tmp_path / "tok2")
    data["tokenizer"]["vocab_size"] = 350
    data["tokenizer"]["sample_chars"] = 10_000
    Path(config).write_text(yaml.safe_dump(data))
    with pytest.raises(DataError, match=r"prepared with another tokenizer .*--overwrite"):
        run_prepare(config, workers=1)  # trains tok2 from the sources first, then refuses
    run_prepare(config, workers=1, overwrite=True)
    assert _manifest(config).vocab_size == 350


def test_bad_inputs_are_counted_or_named(tmp_path, tiny_tokenizer):
    raw = tmp_path / "inputs"
    raw.mkdir()
    (raw / "empty.txt").write_text("")
    (raw / "blank.txt").write_text("  \n")
    (raw / "bad.txt").write_bytes(b"caf\xe9 ok \xff\xfe end of a long enough document\n")
    (raw / "good.txt").write_text(synthetic_docs(1, seed=5)[0])
    (raw / "tiny.txt").write_text("short")
    config = corpus_config(tmp_path, tiny_tokenizer, min_chars=10,
                           sources=[{"name": "raw", "path": str(raw)}])
    run_prepare(config, workers=1)
    s = _manifest(config).stats["raw"]
    assert (s["files"], s["empty_files"], s["too_short"]) == (5, 2, 1)
    assert (s["docs_with_replacements"], s["replaced_chars"]) == (1, 3)
    assert s["train_documents"] + s["validation_documents"] == 2


@pytest.mark.parametrize("source, message", [
    ({"path": "{root}/rec.jsonl"}, r"rec.jsonl line 2: no field 'text' \(found: body, id\); set `text_field:`"),
    ({"path": "{root}/data.xyz"}, r"data.xyz: unknown input format .*accepted formats: jsonl \(.jsonl"),
    ({"path": "{root}/missing.jsonl"}, r"input path .*missing.jsonl does not exist"),
    ({"path": "{root}/nomatch*.jsonl"}, r"the glob .* matches no file"),
])
def test_input_errors_name_file_and_fix(tmp_path, tiny_tokenizer, source, message):
    (tmp_path / "rec.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "x", "id": 1}) + "\n")
    (tmp_path / "data.xyz").write_text("hello")
    source = {"name": "s", **{k: v.format(root=tmp_path) for k, v in source.items()}}
    config = corpus_config(tmp_path, tiny_tokenizer, sources=[source])
    with pytest.raises(DataError, match=message):
        run_prepare(config, workers=1)


def test_trains_missing_tokenizer_then_prepares(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", synthetic_docs(150, seed=8))
    config = corpus_config(tmp_path, str(tmp_path / "newtok"), sources=[{"name": "c", "path": str(tmp_path / "c.jsonl")}],
                           tokenizer={"path": str(tmp_path / "newtok"), "vocab_size": 320, "sample_chars": 20_000})
    _, logs = run_prepare(config, workers=1)
    assert any("not found: training vocab 320" in line for line in logs)
    assert _manifest(config).vocab_size == 320 and (tmp_path / "newtok/tokenizer.json").is_file()
