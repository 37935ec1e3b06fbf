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
    p.add_argument("--tokens", required=True, type=token_budget, help="training budget in tokens, e.g. 300e9")
    p.add_argument("--out", default=None, help="directory for mixture.png and mixture.json (default: output_dir "
                                               "of the config, or the current directory for planning-only configs)")
    p.add_argument("--overwrite", action="store_true", help="replace mixture.json and mixture.png of an earlier plan")
    p.set_defaults(func=run)


def token_budget(text: str) -> float:
    """A finite, positive number of tokens (argparse reports the error with the flag's name)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of tokens (e.g. 300e9)") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of tokens > 0 (e.g. 300e9)")
    return value


def run(args: argparse.Namespace) -> int:
    from data_prep.mixture_plan import output_paths, plan_for_config, render_table, write_outputs
    from llmtrain.config.data import load_data_config
    from llmtrain.errors import UserError

    cfg = load_data_config(args.config, args.set)
    plan = plan_for_config(cfg, args.tokens, config_path=args.config)
    print(render_table(plan))
    plan.check_caps()  # a refused plan writes nothing: the previous plan's files stay as they are
    existing = [p for p in output_paths(args.out, cfg) if p.exists()]
    if existing and not args.overwrite:
        raise UserError(f"{' and '.join(map(str, existing))} already exist (an earlier plan); pass --overwrite to "
                        f"replace them, or --out DIR to write elsewhere")
    for path in write_outputs(plan, args.out, cfg):
        print(f"[mixture] wrote {path}")
    return 0
