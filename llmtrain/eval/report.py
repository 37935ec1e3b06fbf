"""The evaluation report: ``eval.json`` (everything), ``eval.md`` (tables) and PNG bar charts.

``results`` is a plain dict with optional sections: ``perplexity`` ({source: {loss, ppl, tokens}}),
``sft`` ({split: {loss, ppl, tokens}}), ``classification`` ({system: {accuracy, macro_f1, ...}},
where systems are the fine-tuned model and the baselines on the same split), ``lm_eval``
({task: {metric: value}}) and ``samples`` ([{prompt, completion}]).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def _table(rows: dict[str, dict[str, Any]], first: str, keys: list[str]) -> list[str]:
    lines = [f"| {first} | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    lines += [f"| {name} | " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for name, r in rows.items()]
    return lines + [""]


def markdown(results: dict[str, Any]) -> str:
    """The Markdown summary of ``results`` (one table per section)."""
    out = ["# Evaluation", ""]
    if results.get("model"):
        out += [f"Model: `{results['model']}`", ""]
    if results.get("perplexity"):
        out += ["## Perplexity per source (held-out shards)", ""]
        out += _table(results["perplexity"], "source", ["loss", "ppl", "tokens"])
    if results.get("sft"):
        out += ["## SFT held-out loss (response tokens only)", ""]
        out += _table(results["sft"], "split", ["loss", "ppl", "tokens"])
    if results.get("classification"):
        task = results.get("classification_task", "classification")
        out += [f"## {task}: fine-tuned model vs baselines (same test split)", ""]
        per_class = list(dict.fromkeys(k for r in results["classification"].values() for k in r if k.startswith("f1/")))
        out += _table(results["classification"], "system", ["accuracy", "macro_f1", *per_class, "n"])
    if results.get("lm_eval"):
        out += ["## lm-eval-harness (offline, local tasks)", ""]
        metrics = sorted({k for m in results["lm_eval"].values() for k in m})
        out += _table(results["lm_eval"], "task", metrics)
    if results.get("samples"):
        out += ["## Generation samples", ""]
        for s in results["samples"]:
            out += [f"**Prompt:** {s['prompt']}", "", "```", s["completion"], "```", ""]
    return "\n".join(out)


def _bar_chart(values: dict[str, float], title: str, ylabel: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(values)), 3.2))
    bars = ax.bar(list(values), list(values.values()), color="#4c72b0")
    ax.bar_label(bars, fmt="%.3f")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(results: dict[str, Any], out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write eval.json, eval.md and (with ``plots``) PNGs; return the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "eval.json", "markdown": out / "eval.md"}
    paths["json"].write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    paths["markdown"].write_text(markdown(results))
    if plots and results.get("classification"):
        acc = {k: v["accuracy"] for k, v in results["classification"].items()}
        paths["classification_png"] = _bar_chart(acc, "accuracy on the test split", "accuracy", out / "classification.png")
    if plots and results.get("perplexity"):
        ppl = {k: v["ppl"] for k, v in results["perplexity"].items() if not math.isnan(v["ppl"])}
        if ppl:
            paths["perplexity_png"] = _bar_chart(ppl, "held-out perplexity per source", "perplexity", out / "perplexity.png")
    return paths
