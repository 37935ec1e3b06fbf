"""`llmtrain mixture`: per-source tokens drawn and epochs for a token budget, as a table and a chart."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mixture", help="plan a mixture: tokens drawn and epochs per source for a budget",
                       description="Print, for a token budget, each source's tokens available, weight, tokens "
                                   "drawn and epochs elapsed, and write a PNG chart. Sources may declare "
                                   "`tokens:` instead of being prepared. A plan beyond a max_epochs cap is refused.")
    p.add_argument("--config", required=True, help="data config YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--tokens", required=True, type=float, help="training budget in tokens, e.g. 300e9")
    p.add_argument("--out", default=None, help="directory for mixture.png and mixture.json (default: output_dir "
                                               "of the config, or the current directory for planning-only configs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from data_prep.mixture_plan import plan_for_config, render_table, write_outputs
    from llmtrain.config.data import load_data_config

    cfg = load_data_config(args.config, args.set)
    plan = plan_for_config(cfg, args.tokens, config_path=args.config)
    print(render_table(plan))
    for path in write_outputs(plan, args.out, cfg):
        print(f"[mixture] wrote {path}")
    plan.check_caps()
    return 0
