"""Per-process memory of a source's document index for 1e6 and 2e7 documents: shared tables vs in memory.

Writes one synthetic shard per document count into a temporary directory, lets a first process
build the per-epoch tables (``<dir>/index/``), then measures in a second process what a training
rank pays: Python heap peak (tracemalloc) and resident-set growth while it opens the stream and
reads 2,000 windows. For comparison it measures the heap the in-memory definition needs (the
concatenated document index plus one epoch's tables, as every rank held it before issue 17).

    python benchmarks/bench_doc_index.py                 # 1e6 and 2e7 documents (~0.5 GB of disk)
    python benchmarks/bench_doc_index.py --docs 1e6 4e6
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

SEQ = 2048


def _rss_kib() -> tuple[int, int]:
    """(private, file-backed) resident KiB: RssAnon is this rank's own memory; RssFile is page cache
    of the mapped files, one copy per node shared by its ranks (and dropped under memory pressure)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["RssAnon"].split()[0]), int(fields["RssFile"].split()[0])


def _make(root: Path, n_docs: int):
    from llmtrain.data.shards import ShardInfo

    lengths = np.random.default_rng(0).integers(2, 14, n_docs)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.ones(int(offsets[-1]), dtype=np.uint16).tofile(root / "s.bin")
    with open(root / "s.idx", "wb") as f:
        np.save(f, offsets)
    return [ShardInfo(file="s.bin", tokens=int(offsets[-1]), documents=n_docs, dtype="uint16", sha256="synthetic",
                      tokenizer_fingerprint="t", source="src", split="train")]


def measure(root: Path, n_docs: int) -> dict[str, float]:
    """In this process: what opening the stream and reading windows costs with the tables built."""
    from llmtrain.data.doc_index import epoch_tables
    from llmtrain.data.loader import SourceStream
    from llmtrain.data.shards import ShardInfo

    infos = [ShardInfo(**json.loads((root / "info.json").read_text()))]
    rss0 = _rss_kib()
    tracemalloc.start()
    t = time.perf_counter()
    st = SourceStream(root, infos, "src", SEQ, 1, shuffle=True)
    rng = np.random.default_rng(0)
    for k in rng.integers(0, st.samples_per_epoch, 2000):
        st.window(int(k))
    elapsed = time.perf_counter() - t
    shared_peak = tracemalloc.get_traced_memory()[1]
    anon, file = (a - b for a, b in zip(_rss_kib(), rss0, strict=True))
    tracemalloc.reset_peak()
    lengths = np.concatenate([np.diff(np.asarray(r.offsets)) for r in st.readers])
    index = (lengths, np.zeros(len(lengths), dtype=np.int32), np.asarray(st.readers[0].offsets[:-1]).copy())
    tables = epoch_tables(lengths, st.samples_per_epoch, seed=1, name="src", epoch=0, shuffle=True)
    old_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del index, tables
    return {"shared_heap": shared_peak, "private_rss_growth": anon * 1024, "shared_file_rss": file * 1024, "open_and_read_s": elapsed,
            "in_memory_heap": old_peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=float, nargs="+", default=[1e6, 2e7])
    p.add_argument("--measure", help=argparse.SUPPRESS)  # internal: the second process
    args = p.parse_args()
    if args.measure:
        root, n = args.measure.rsplit(":", 1)
        print(json.dumps(measure(Path(root), int(n))))
        return
    from dataclasses import asdict

    from llmtrain.data.loader import SourceStream

    print("rank heap / private RSS: what each rank holds; mapped: page cache of the tables, shared per node")
    print(f"{'documents':>10} {'build s':>8} {'rank heap':>10} {'private RSS+':>13} {'mapped':>9} "
          f"{'in-memory heap':>15} {'heap per doc (shared/in-memory)':>32}")
    for n in (int(x) for x in args.docs):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            infos = _make(root, n)
            (root / "info.json").write_text(json.dumps(asdict(infos[0])))
            t = time.perf_counter()
            SourceStream(root, infos, "src", SEQ, 1, shuffle=True).window(0)  # the first rank builds
            build = time.perf_counter() - t
            out = subprocess.run([sys.executable, __file__, "--measure", f"{root}:{n}"], capture_output=True,
                                 text=True, check=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{n:>10.0e} {build:>8.1f} {m['shared_heap'] / 1e6:>8.2f}MB {m['private_rss_growth'] / 1e6:>11.1f}MB "
                  f"{m['shared_file_rss'] / 1e6:>7.1f}MB "
                  f"{m['in_memory_heap'] / 1e6:>13.1f}MB {m['shared_heap'] / n:>17.2f} / {m['in_memory_heap'] / n:.1f} B")


if __name__ == "__main__":
    main()
