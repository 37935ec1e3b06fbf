"""Plan a mixture for a token budget: the table and chart behind ``llmtrain mixture``."""

from __future__ import annotations

import json
from pathlib import Path

from llmtrain.config.data import DataConfig
from llmtrain.data.mixture import MixturePlan
from llmtrain.data.shards import read_manifest
from llmtrain.errors import DataError


def plan_for_config(cfg: DataConfig, budget: float, config_path: str = "<data config>") -> MixturePlan:
    """Tokens available come from ``tokens:`` when declared, else from the prepared manifest (train split)."""
    manifest = None
    rows = []
    for s in cfg.sources:
        if s.tokens is not None:
            avail = float(s.tokens)
        else:
            if manifest is None:
                try:
                    manifest = read_manifest(cfg.output_path, config_path)
                except DataError as e:
                    raise DataError(f"source {s.name} declares no `tokens:` and its data is not prepared: {e}") from None
            avail = float(manifest.tokens(s.name, "train"))
        cap = s.max_epochs if s.max_epochs is not None else cfg.max_epochs
        rows.append((s.name, avail, s.weight, cap))
    return MixturePlan.build(budget, rows)


def _fmt(n: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def render_table(plan: MixturePlan) -> str:
    head = ["source", "tokens available", "weight", "tokens drawn", "epochs", "cap"]
    rows = [[r.source, _fmt(r.tokens_available), f"{r.weight:.3f}", _fmt(r.tokens_drawn), f"{r.epochs:.2f}",
             "-" if r.max_epochs is None else f"{r.max_epochs:g}" + (" EXCEEDED" if r.epochs > r.max_epochs else "")]
            for r in plan.rows]
    rows.append(["total", _fmt(sum(r.tokens_available for r in plan.rows)), "1.000", _fmt(plan.budget), "", ""])
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([f"mixture plan for {_fmt(plan.budget)} tokens"] + [fmt.format(*r) for r in [head] + rows])


def output_paths(out_dir: str | None, cfg: DataConfig) -> list[Path]:
    """Where ``write_outputs`` writes: ``--out``, else the config's output_dir (the current directory
    for a planning-only config)."""
    planning_only = all(s.planning_only for s in cfg.sources)
    out = Path(out_dir) if out_dir else (Path(".") if planning_only else cfg.output_path)
    return [out / "mixture.json", out / "mixture.png"]


def write_outputs(plan: MixturePlan, out_dir: str | None, cfg: DataConfig) -> list[Path]:
    """``mixture.json`` (the numbers) and ``mixture.png`` (tokens drawn vs available, epochs per source)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = output_paths(out_dir, cfg)[0].parent
    out.mkdir(parents=True, exist_ok=True)
    data = {"budget": plan.budget, "sources": [r.__dict__ for r in plan.rows]}
    (out / "mixture.json").write_text(json.dumps(data, indent=1) + "\n")
    names = [r.source for r in plan.rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.6 * len(names) + 2))
    y = range(len(names))
    a.barh(y, [r.tokens_available for r in plan.rows], color="#c8d6e5", label="available")
    a.barh(y, [r.tokens_drawn for r in plan.rows], height=0.45, color="#2e86de", label="drawn")
    a.set_yticks(list(y), names)
    a.set_xscale("log")
    a.set_xlabel("tokens")
    a.legend(loc="lower right")
    a.invert_yaxis()
    colors = ["#ee5253" if r.max_epochs is not None and r.epochs > r.max_epochs else "#10ac84" for r in plan.rows]
    b.barh(y, [r.epochs for r in plan.rows], color=colors)
    for i, r in enumerate(plan.rows):
        b.text(r.epochs, i, f" {r.epochs:.2f}", va="center")
        if r.max_epochs is not None:
            b.plot([r.max_epochs, r.max_epochs], [i - 0.4, i + 0.4], color="black", lw=1)
    b.set_yticks(list(y), [])
    b.set_xlabel("epochs elapsed")
    b.invert_yaxis()
    fig.suptitle(f"mixture plan for {_fmt(plan.budget)} tokens")
    fig.tight_layout()
    fig.savefig(out / "mixture.png", dpi=100)
    plt.close(fig)
    return [out / "mixture.json", out / "mixture.png"]
