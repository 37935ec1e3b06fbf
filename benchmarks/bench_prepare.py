"""Tokenization throughput of `llmtrain prepare` vs `datasets.map` + a HF fast tokenizer, and peak RSS.

Same text, same tokenizer (our SentencePiece model and its equivalent tokenizer.json), same run:
  .venv/bin/python benchmarks/bench_prepare.py [--mb 10] [--big-factor 4]
The corpus is the starter sources' text (fetched into LLMTRAIN_CACHE) repeated to the wanted size,
each repetition tagged so exact dedup does not drop it. Each measurement runs in a fresh process so
that its peak RSS (main process and, separately, the largest worker) is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_corpus(path: Path, megabytes: float) -> int:
    from data_prep.starter import starter_path

    docs = []
    for name in ("shakespeare", "wikipedia", "news", "python_stdlib"):
        docs += [json.loads(line)["text"] for line in starter_path(name).open()]
    target, written, rep = int(megabytes * 1e6), 0, 0
    with path.open("w") as f:
        while written < target:
            for d in docs:
                text = f"[copy {rep}] {d}"
                f.write(json.dumps({"text": text}) + "\n")
                written += len(text)
                if written >= target:
                    break
            rep += 1
    return written


PREPARE = """
import json, logging, resource, sys, time
from llmtrain.config.base import build
from llmtrain.config.data import DataConfig
from data_prep.prepare import prepare
from llmtrain.data.shards import read_manifest
cfg = build(DataConfig, json.loads(sys.argv[1]))
t = time.perf_counter()
logging.getLogger("llmtrain").setLevel(logging.WARNING)  # stdout carries only the JSON result
prepare(cfg, workers=int(sys.argv[2]), overwrite=True)
dt = time.perf_counter() - t
m = read_manifest(cfg.output_path)
print(json.dumps({"seconds": dt, "tokens": sum(s.tokens for s in m.shards),
                  "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

DATASETS_MAP = """
import json, resource, sys, time
import datasets
from transformers import AutoTokenizer
datasets.disable_progress_bars()
tok = AutoTokenizer.from_pretrained(sys.argv[2])
t = time.perf_counter()
ds = datasets.load_dataset("json", data_files=sys.argv[1], split="train", cache_dir=sys.argv[3])
ds = ds.map(lambda b: {"input_ids": [[tok.bos_token_id] + x + [tok.eos_token_id] for x in
            tok(b["text"], add_special_tokens=False)["input_ids"]]}, batched=True, batch_size=1000,
            remove_columns=["text"], num_proc=int(sys.argv[4]) if int(sys.argv[4]) > 1 else None)
n = sum(len(x) for b in ds.iter(batch_size=10000) for x in b["input_ids"])
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "tokens": n, "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                         cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "true"})
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=10, help="small corpus size in MB of text")
    ap.add_argument("--big-factor", type=float, default=4, help="the large corpus is this many times bigger")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from data_prep.tokenizer import train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, big = tmp / "small.jsonl", tmp / "big.jsonl"
        sizes = {small: build_corpus(small, args.mb), big: build_corpus(big, args.mb * args.big_factor)}
        texts = (json.loads(line)["text"] for line in small.open())
        train_tokenizer(texts, tmp / "tok", vocab_size=8192, max_chars=5_000_000, sample_sentences=100_000)

        def cfg(path: Path, name: str) -> str:
            return json.dumps({"tokenizer": {"path": str(tmp / "tok")}, "output_dir": str(tmp / name),
                               "dedup": False, "sources": [{"name": "text", "path": str(path)}]})

        rows = []
        for label, code, a in [
            ("prepare, 1 worker", PREPARE, (cfg(small, "o1"), "1")),
            ("prepare, 2 workers", PREPARE, (cfg(small, "o2"), "2")),
            ("datasets.map + HF fast, 1 proc", DATASETS_MAP, (str(small), str(tmp / "tok"), str(tmp / "c1"), "1")),
            ("datasets.map + HF fast, 2 procs", DATASETS_MAP, (str(small), str(tmp / "tok"), str(tmp / "c2"), "2")),
            (f"prepare, 2 workers, {args.big_factor:g}x corpus", PREPARE, (cfg(big, "o3"), "2")),
        ]:
            r = run(code, *a)
            r["label"], r["tokens_per_s"] = label, r["tokens"] / r["seconds"]
            rows.append(r)
            print(f"{label:<40} {r['tokens']:>11,} tokens {r['seconds']:7.2f} s {r['tokens_per_s']:>11,.0f} tok/s  "
                  f"peak RSS main {r['rss_main_mb']:6.0f} MB, largest worker {r['rss_worker_mb']:6.0f} MB", flush=True)
        p1, p2, d1, d2, pb = rows
        print(f"\ncorpus: {sizes[small] / 1e6:.1f} MB and {sizes[big] / 1e6:.1f} MB of text; tokens identical: "
              f"{p1['tokens'] == d1['tokens']}")
        print(f"ratio prepare/datasets.map: 1 worker {p1['tokens_per_s'] / d1['tokens_per_s']:.2f}x, "
              f"2 workers {p2['tokens_per_s'] / d2['tokens_per_s']:.2f}x")
        print(f"peak RSS main process: {p2['rss_main_mb']:.0f} MB at {sizes[small] / 1e6:.0f} MB vs "
              f"{pb['rss_main_mb']:.0f} MB at {sizes[big] / 1e6:.0f} MB of text")


if __name__ == "__main__":
    main()
