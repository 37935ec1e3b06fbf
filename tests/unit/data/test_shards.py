import json

import numpy as np
import pytest

from llmtrain.data.shards import (
    Manifest,
    ShardReader,
    TokenShardWriter,
    dtype_for_vocab,
    read_manifest,
    write_manifest,
)
from llmtrain.errors import DataError


def _write(tmp_path, docs, dtype=np.uint16):
    w = TokenShardWriter(tmp_path, "src/train-00000-0000.bin", dtype=np.dtype(dtype), source="src", split="train",
                         tokenizer_fingerprint="fp")
    for d in docs:
        w.add(np.asarray(d))
    return w.close()


def test_dtype_for_vocab():
    assert dtype_for_vocab(8192) == np.uint16
    assert dtype_for_vocab(65535) == np.uint16
    assert dtype_for_vocab(65536) == np.uint32


def test_roundtrip_and_manifest(tmp_path):
    docs = [[1, 5, 6, 2], [1, 7, 2], [1, 65000, 9, 9, 2]]
    info = _write(tmp_path, docs)
    assert (info.tokens, info.documents, info.dtype) == (12, 3, "uint16")
    assert not list(tmp_path.rglob(".*tmp*"))  # no temporary left behind
    r = ShardReader(tmp_path, info, verify=True)
    assert np.asarray(r.offsets).tolist() == [0, 4, 7, 12]
    assert r.tokens[4:7].tolist() == [1, 7, 2]
    assert r.document_lengths().tolist() == [4, 3, 5]
    write_manifest(tmp_path, Manifest("fp", 65001, "tok", [info], {"src": {"train_tokens": 12}}))
    m = read_manifest(tmp_path)
    assert m.select("src", "train")[0] == info and m.tokens("src", "train") == 12
    assert len(m.fingerprint()) == 16


def test_uint32_roundtrip(tmp_path):
    info = _write(tmp_path, [[1, 70000, 2]], dtype=np.uint32)
    assert ShardReader(tmp_path, info).tokens.tolist() == [1, 70000, 2]


def test_truncated_shard_names_file_and_fix(tmp_path):
    info = _write(tmp_path, [[1, 2, 3, 4]])
    path = tmp_path / info.file
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DataError, match=r"train-00000-0000.bin has 6 bytes but the manifest says 4 uint16.*--overwrite"):
        ShardReader(tmp_path, info)


def test_sha_mismatch_on_verify(tmp_path):
    info = _write(tmp_path, [[1, 2, 3, 4]])
    path = tmp_path / info.file
    path.write_bytes(np.asarray([1, 2, 3, 5], dtype=np.uint16).tobytes())
    ShardReader(tmp_path, info)  # size still right: only verify notices
    with pytest.raises(DataError, match="content changed"):
        ShardReader(tmp_path, info, verify=True)


def test_missing_manifest_and_mismatched_fingerprint(tmp_path):
    with pytest.raises(DataError, match=r"no manifest.json .*llmtrain prepare --config x.yaml"):
        read_manifest(tmp_path, "x.yaml")
    info = _write(tmp_path, [[1, 2]])
    write_manifest(tmp_path, Manifest("other", 10, "tok", [info]))
    with pytest.raises(DataError, match="made with tokenizer fp"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid manifest"):
        read_manifest(tmp_path)
    d = Manifest("fp", 10, "tok", [info]).to_dict()
    d["format_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="format version 99"):
        read_manifest(tmp_path)


def test_index_mismatch(tmp_path):
    info = _write(tmp_path, [[1, 2], [3, 4]])
    info.documents = 3
    with pytest.raises(DataError, match="lists 2 documents"):
        ShardReader(tmp_path, info)
