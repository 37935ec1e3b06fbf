"""`llmtrain prepare`: tokenize a data config's sources into shards + manifest.json."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="tokenize raw corpora into shards (parallel, resumable)",
                       description="Fetch/read the sources of a data config, train its tokenizer if missing, "
                                   "and write token shards plus manifest.json to its output_dir. Finished parts "
                                   "are skipped on re-run. For several nodes run one job per --shard-index, "
                                   "then --merge once.")
    p.add_argument("--config", required=True, help="data config YAML (e.g. configs/data/starter.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: CPUs, at most 8)")
    p.add_argument("--overwrite", action="store_true", help="delete this config's previous output first")
    p.add_argument("--shard-index", type=int, default=0, help="this job's index among --num-shards (Slurm array)")
    p.add_argument("--num-shards", type=int, default=1, help="number of prepare jobs splitting the input parts")
    p.add_argument("--merge", action="store_true", help="combine the finished parts of all jobs into manifest.json")
    p.add_argument("--tokenizer-only", action="store_true", help="only fetch sources and train the tokenizer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from data_prep.merge import merge
    from data_prep.prepare import default_workers, ensure_tokenizer, prepare
    from llmtrain.config.data import load_data_config

    cfg = load_data_config(args.config, args.set)
    if args.tokenizer_only:
        ensure_tokenizer(cfg)
        return 0
    if args.merge:
        merge(cfg, config_path=args.config)
        return 0
    prepare(cfg, workers=args.workers or default_workers(), overwrite=args.overwrite, shard_index=args.shard_index,
            num_shards=args.num_shards, config_path=args.config)
    return 0
