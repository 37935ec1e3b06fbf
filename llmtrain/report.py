"""The quickstart's report.md: stage timings, mixture plan, loss curves, evaluations, export sample."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path


def _section(title: str, body: list[str]) -> list[str]:
    return [f"## {title}", "", *body, ""]


def _embed_markdown(path: Path, drop_title: bool = True) -> list[str]:
    if not path.is_file():
        return [f"_missing: {path.name}_"]
    lines = path.read_text().splitlines()
    if drop_title and lines and lines[0].startswith("# "):
        lines = lines[1:]
    return [ln.replace("## ", "### ", 1) if ln.startswith("## ") else ln for ln in lines]


def _image(work: Path, src: Path, name: str, alt: str) -> list[str]:
    if not src.is_file():
        return []
    fig_dir = work / "figures"
    fig_dir.mkdir(exist_ok=True)
    dst = fig_dir / name
    if src.resolve() != dst.resolve():
        shutil.copy2(src, dst)
    return [f"![{alt}](figures/{name})", ""]


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:  # the installed version, without importing DeepSpeed (only the engine does)
        ds = version("deepspeed")
    except PackageNotFoundError:
        ds = "?"
    return f"torch {torch.__version__}, deepspeed {ds}, Python {platform.python_version()}, {os.cpu_count()} CPU cores"


def _mixture_table(path: Path) -> list[str]:
    if not path.is_file():
        return []
    plan = json.loads(path.read_text())
    rows = [f"Budget: {plan['budget']:,.0f} tokens.", "",
            "| source | tokens available | weight | tokens drawn | epochs elapsed |", "|---|---|---|---|---|"]
    rows += [f"| {s['source']} | {s['tokens_available']:,.0f} | {s['weight']:.3f} | {s['tokens_drawn']:,.0f} | {s['epochs']:.2f} |"
             for s in plan["sources"]]
    return [*rows, ""]


def _pretrain_summary(run_dir: Path) -> list[str]:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return ["_no metrics found_"]
    recs = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    train = [r for r in recs if r.get("kind") == "train"]
    val = [r for r in recs if r.get("kind") == "validation"]
    out = []
    if train:
        first, last = train[0], train[-1]
        tps = sorted(r["tokens_per_s"] for r in train)[len(train) // 2]
        out += [f"- steps: {last['step']}, tokens: {last['consumed_tokens']:,}",
                f"- train loss: {first['loss']:.3f} (step {first['step']}) -> {last['loss']:.3f} (step {last['step']})",
                f"- median throughput: {tps:,.0f} tokens/s", ""]
    if val:
        last = val[-1]
        rows = sorted({k.split("/")[1] for k in last if k.startswith("val/")})
        out += ["| source | validation loss | perplexity |", "|---|---|---|"]
        out += [f"| {s} | {last[f'val/{s}/loss']:.3f} | {last[f'val/{s}/ppl']:.1f} |" for s in rows]
        out.append("")
    return out


def write_quickstart_report(work: Path, pretrain_run: Path, finetune_run: Path, timings: dict[str, float]) -> Path:
    lines = ["# llmtrain quickstart report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} on {_versions()}.", ""]
    rows = ["| stage | seconds |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    rows.append(f"| **total** | **{sum(timings.values()):.1f}** |")
    lines += _section("Stage timings", rows)
    mix = _mixture_table(work / "mixture" / "mixture.json") + _image(work, work / "mixture" / "mixture.png", "mixture.png", "mixture plan")
    lines += _section("Data mixture", mix or ["_no mixture plan found_"])
    pre = _pretrain_summary(pretrain_run) + _image(work, pretrain_run / "loss.png", "pretrain_loss.png", "loss curves")
    lines += _section("Pretraining (tiny model, DeepSpeed ZeRO-2)", pre)
    lines += _section("Evaluation of the pretrained model", _embed_markdown(work / "eval_pretrain" / "eval.md"))
    ft = _embed_markdown(work / "eval_sentiment" / "eval.md")
    ft += _image(work, work / "eval_sentiment" / "classification.png", "sentiment_accuracy.png", "accuracy")
    ft += _image(work, finetune_run / "loss.png", "finetune_loss.png", "fine-tuning loss")
    lines += _section("Sentiment fine-tuning (Rotten Tomatoes, split by movie)", ft)
    gen = work / "hf" / "generation.json"
    if gen.is_file():
        g = json.loads(gen.read_text())
        body = [f"Exported to `{work / 'hf'}` and reloaded as `transformers.{g['class']}`; greedy continuation of "
                f"`{g['prompt']}`:", "", "```", g["text"], "```"]
    else:
        body = ["_export not run_"]
    lines += _section("Hugging Face export", body)
    path = work / "report.md"
    path.write_text("\n".join(lines))
    return path
