"""The per-epoch document tables: built once into the prepared directory, memory-mapped everywhere,
equal to the in-memory definition, and flat in per-process memory as the document count grows."""

import os
import threading
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from llmtrain.data import doc_index
from llmtrain.data.doc_index import epoch_tables, shared_tables
from llmtrain.data.loader import PretrainLoader, SourceStream
from llmtrain.data.shards import ShardInfo, read_manifest
from llmtrain.errors import DataError

SEQ = 16


def _write_shard(root: Path, name: str, lengths: np.ndarray, seed: int) -> ShardInfo:
    """A shard written directly (fast for a million documents): random tokens, BOS=1 at each start."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    toks = np.random.default_rng(seed).integers(2, 400, int(offsets[-1])).astype(np.uint16)
    toks[offsets[:-1]] = 1
    toks.tofile(root / f"{name}.bin")
    with open(root / f"{name}.idx", "wb") as f:
        np.save(f, offsets)
    return ShardInfo(file=f"{name}.bin", tokens=int(offsets[-1]), documents=len(lengths), dtype="uint16",
                     sha256=f"sha-{name}-{seed}", tokenizer_fingerprint="t", source="src", split="train")


def _reference_window(readers, seq_len, seed, name, k):
    """The loader's definition before issue 17: a concatenated in-memory index of every document."""
    lengths = [np.diff(np.asarray(r.offsets)) for r in readers]
    doc_len = np.concatenate(lengths)
    doc_shard = np.concatenate([np.full(len(x), i) for i, x in enumerate(lengths)])
    doc_start = np.concatenate([np.asarray(r.offsets[:-1]) for r in readers])
    spe = (int(doc_len.sum()) - 1) // seq_len
    e, j = divmod(k, spe)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), e])
    order, sample_order = rng.permutation(len(doc_len)), rng.permutation(spe)
    cum = np.concatenate([[0], np.cumsum(doc_len[order])])
    pos, out = int(sample_order[j]) * seq_len, []
    d = int(np.searchsorted(cum, pos, side="right")) - 1
    while len(out) < seq_len + 1:
        g = int(order[d])
        off = pos - int(cum[d]) if not out else 0
        start = int(doc_start[g]) + off
        out.extend(readers[doc_shard[g]].tokens[start: start + min(int(doc_len[g]) - off, seq_len + 1 - len(out))])
        d += 1
    return out


@pytest.fixture()
def shards(tmp_path):
    rng = np.random.default_rng(0)
    return tmp_path, [_write_shard(tmp_path, f"s{i}", rng.integers(1, 40, 300), i) for i in range(3)]


def test_windows_equal_the_rebuilt_index_across_epochs(shards):
    root, infos = shards
    st = SourceStream(root, infos, "src", SEQ, 7, shuffle=True)
    for k in [0, 1, 17, st.samples_per_epoch - 1, st.samples_per_epoch, 2 * st.samples_per_epoch + 5]:
        assert st.window(k)[0].tolist() == _reference_window(st.readers, SEQ, 7, "src", k)


def test_tables_are_files_memory_mapped_and_built_once(shards):
    root, infos = shards
    st = SourceStream(root, infos, "src", SEQ, 7, shuffle=True)
    st.window(0)
    epoch_dir = root / "index" / st.key / "epoch_00000"
    assert sorted(p.name for p in epoch_dir.iterdir()) == ["cum.npy", "doc_order.npy", "sample_order.npy"]
    tables = st._epochs[0]
    assert all(isinstance(a, np.memmap) for a in tables.values())
    assert tables["doc_order"].dtype == np.int32 and tables["cum"].dtype == np.int64
    expected = epoch_tables(np.concatenate([np.diff(np.asarray(r.offsets)) for r in st.readers]),
                            st.samples_per_epoch, seed=7, name="src", epoch=0, shuffle=True)
    assert all(np.array_equal(tables[t], expected[t]) for t in expected)
    stamps = {p.name: p.stat().st_mtime_ns for p in epoch_dir.iterdir()}
    other = SourceStream(root, infos, "src", SEQ, 7, shuffle=True)
    other._build = lambda e: pytest.fail("a second process must map the tables, not rebuild them")
    assert other.window(3)[0].tolist() == st.window(3)[0].tolist()
    assert {p.name: p.stat().st_mtime_ns for p in epoch_dir.iterdir()} == stamps
    # another seed or sequence length gets its own tables, never stale ones
    assert SourceStream(root, infos, "src", SEQ, 8, shuffle=True).key != st.key
    assert SourceStream(root, infos, "src", SEQ + 1, 7, shuffle=True).key != st.key


def test_concurrent_first_use_builds_once(shards, monkeypatch):
    root, infos = shards
    builds, results = [], []
    real = SourceStream._build

    def slow_build(self, e):
        builds.append(e)
        return real(self, e)

    monkeypatch.setattr(SourceStream, "_build", slow_build)
    streams = [SourceStream(root, infos, "src", SEQ, 1, shuffle=True) for _ in range(4)]
    threads = [threading.Thread(target=lambda s=s: results.append(s.window(5)[0].tolist())) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == [0] and len(results) == 4 and all(r == results[0] for r in results)
    assert not list((root / "index" / streams[0].key).glob("*.lock"))
    assert not list((root / "index" / streams[0].key).glob(".*tmp*"))


def test_stale_lock_is_taken_over_and_a_live_one_times_out(tmp_path, monkeypatch):
    build = lambda: epoch_tables(np.asarray([3, 4, 5]), 2, seed=0, name="x", epoch=0, shuffle=True)  # noqa: E731
    (tmp_path / "index" / "k").mkdir(parents=True)
    lock = tmp_path / "index" / "k" / "epoch_00000.lock"
    import socket

    lock.write_text(f"{socket.gethostname()} 999999999")  # a process of this host that no longer exists
    assert shared_tables(tmp_path, "k", 0, build)["cum"].tolist() == build()["cum"].tolist()
    assert not lock.exists()
    live = tmp_path / "index" / "k" / "epoch_00001.lock"
    live.write_text(f"{socket.gethostname()} {os.getpid()}")
    monkeypatch.setenv(doc_index.WAIT_ENV, "0.2")
    with pytest.raises(DataError, match=r"waited 0.2 s for another process to build the document index .*"
                                        r"epoch_00001 .* delete .*epoch_00001.lock"):
        shared_tables(tmp_path, "k", 1, build)


def test_unwritable_directory_falls_back_to_memory(shards):
    root, infos = shards
    (root / "index").write_text("not a directory")  # mkdir below it fails like a read-only mount
    st = SourceStream(root, infos, "src", SEQ, 7, shuffle=True)
    assert st.window(2)[0].tolist() == _reference_window(st.readers, SEQ, 7, "src", 2)
    assert not isinstance(st._epochs[0]["cum"], np.memmap)


@pytest.mark.parametrize("n_docs", [2_000, 400_000])
def test_per_process_memory_is_flat_in_the_document_count(tmp_path, n_docs):
    lengths = np.random.default_rng(1).integers(2, 12, n_docs)
    infos = [_write_shard(tmp_path, "big", lengths, 0)]
    SourceStream(tmp_path, infos, "src", SEQ, 3, shuffle=True).window(0)  # "rank 0" builds the tables
    tracemalloc.start()
    st = SourceStream(tmp_path, infos, "src", SEQ, 3, shuffle=True)
    for k in range(0, st.samples_per_epoch, max(1, st.samples_per_epoch // 200)):
        st.window(k)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # the old in-memory index alone took ~54 bytes per document (21.6 MB here for 400k documents)
    assert peak < 200_000, peak


def test_loader_batches_unchanged_by_the_shared_index(prepared_corpus):
    kw = dict(seq_len=SEQ, micro_batch_size=2, global_batch_size=8, dp_rank=0, dp_size=1, seed=3)
    a = PretrainLoader(prepared_corpus, **kw)
    b = PretrainLoader(prepared_corpus, **kw)  # maps what `a` built
    for _ in range(6):
        x, y = a.next_batch(), b.next_batch()
        assert all(np.array_equal(x[k].numpy(), y[k].numpy()) for k in x)
    root = a.cfg.output_path
    assert (Path(root) / "index").is_dir() and read_manifest(root).sources == ["alpha", "beta", "gamma"]
