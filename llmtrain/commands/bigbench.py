"""`llmtrain bigbench`: convert a BIG-bench multiple-choice task to local jsonl for `llmtrain eval --lm-eval`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bigbench", help="convert a BIG-bench multiple-choice task (from the bigbench==1.0.0 sdist) to jsonl",
        description="Fetch bigbench==1.0.0 from PyPI once (358 MB, cached under $LLMTRAIN_CACHE/downloads), read "
                    "bigbench/benchmark_tasks/TASK/task.json from it and write TASK's multiple-choice examples as "
                    "jsonl rows {input, choices, gold}. Never mix the output into pretraining data.")
    p.add_argument("--task", default="human_organs_senses", help="BIG-bench JSON task name (default: human_organs_senses)")
    p.add_argument("--out", default=None, help="directory to copy the jsonl into (default: only the cache)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from data_prep.bigbench import bigbench_jsonl

    path = bigbench_jsonl(args.task, args.out)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(f"wrote {len(rows)} multiple-choice examples of BIG-bench {args.task} to {path}")
    return 0
