"""The quickstart's report.md: the sentiment result, stage timings, mixture plan, loss curves, evaluations, export samples."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

from llmtrain.errors import UserError


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


SYSTEMS = [("fine-tuned", "fine-tuned from the pretrained model"),
           ("from-scratch", "same fine-tuning recipe from random weights (no pretraining)"),
           ("tfidf_logreg", "TF-IDF + logistic regression"), ("majority", "majority class")]


def _sentiment_result(work: Path) -> list[str]:
    """Pretrained fine-tune, the same recipe from random weights and both baselines, on one test split."""
    ours, scratch = work / "eval_sentiment" / "eval.json", work / "eval_sentiment_scratch" / "eval.json"
    if not ours.is_file():
        return ["_sentiment evaluation not run_"]
    res = json.loads(ours.read_text())
    systems = dict(res["classification"])
    if scratch.is_file():
        other = json.loads(scratch.read_text())
        if other.get("classification_task") != res.get("classification_task") or \
                other["classification"]["majority"] != systems["majority"]:
            raise UserError(f"{scratch} was not scored on the same split as {ours}; delete both and rerun the stage")
        systems["from-scratch"] = other["classification"]["fine-tuned"]
    rows = ["| system | accuracy | macro-F1 |", "|---|---|---|"]
    rows += [f"| {label} (`{key}`) | {systems[key]['accuracy']:.4f} | {systems[key]['macro_f1']:.4f} |"
             for key, label in SYSTEMS if key in systems]
    acc = {k: v["accuracy"] for k, v in systems.items()}
    n = int(systems["fine-tuned"].get("n", 0))
    notes = [f"Test split: {res.get('classification_task', '?')}, {n:,} review snippets of movies that no training "
             "or pretraining text comes from (the split is by movie; the pretraining mixture's `movie_reviews` "
             "source holds the training movies' snippets and plot summaries only)."]
    if "from-scratch" in acc:
        gain, lead = 100 * (acc["fine-tuned"] - acc["from-scratch"]), 100 * (acc["fine-tuned"] - acc["tfidf_logreg"])
        notes.append(f"Pretraining {'adds' if gain >= 0 else 'costs'} {abs(gain):.1f} accuracy points against the same "
                     f"fine-tune from random weights; the fine-tuned model is {abs(lead):.1f} points "
                     f"{'ahead of' if lead >= 0 else 'behind'} TF-IDF + logistic regression.")
    return [*notes, "", *rows, ""]


def _generations(work: Path) -> list[str]:
    """Greedy continuations of the same prompts by `llmtrain eval` and by the reloaded transformers export."""
    gen = work / "hf" / "generation.json"
    if not gen.is_file():
        return ["_export not run_"]
    g = json.loads(gen.read_text())
    ev = work / "eval_pretrain" / "eval.json"
    ours = {s["prompt"]: s["completion"] for s in json.loads(ev.read_text()).get("samples", [])} if ev.is_file() else {}
    body = [f"Exported to `{work / 'hf'}` and reloaded as `transformers.{g['class']}`; greedy continuations "
            f"(40 new tokens, repetition penalty 1.3 on both sides) beside `llmtrain eval`'s greedy samples of the "
            f"pretrained checkpoint:", ""]
    for s in g.get("samples") or [{"prompt": g["prompt"], "text": g["text"]}]:  # one prompt in earlier work dirs
        body += [f"**{s['prompt']}**", "", "transformers:", "```", s["text"], "```"]
        if s["prompt"] in ours:
            body += ["llmtrain:", "```", s["prompt"] + ours[s["prompt"]], "```"]
        body.append("")
    return body


def write_quickstart_report(work: Path, pretrain_run: Path, finetune_run: Path, timings: dict[str, float],
                            cpu: dict[str, float] | None = None) -> Path:
    total, cpu = sum(timings.values()), cpu or {}
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = ["# llmtrain quickstart report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} on {_versions()}; load average now {load}.", ""]
    lines += _section("Sentiment: what pretraining buys", _sentiment_result(work))
    rows = ["| stage | wall seconds | CPU seconds |", "|---|---|---|"]
    rows += [f"| {k} | {v:.1f} | {cpu[k]:.1f} |" if k in cpu else f"| {k} | {v:.1f} | |" for k, v in timings.items()]
    rows.append(f"| **total** | **{total:.1f}** ({total / 60:.1f} min) | {sum(cpu.values()):.1f} |")
    lines += _section("Stage timings", [*rows, "", "Fetch includes the one-time downloads. CPU seconds count every "
                                        "process of a stage; other load on the machine (the load average above) "
                                        "stretches wall time, not CPU time."])
    mix = _mixture_table(work / "mixture" / "mixture.json") + _image(work, work / "mixture" / "mixture.png", "mixture.png", "mixture plan")
    lines += _section("Data mixture", mix or ["_no mixture plan found_"])
    pre = _pretrain_summary(pretrain_run) + _image(work, pretrain_run / "loss.png", "pretrain_loss.png", "loss curves")
    lines += _section("Pretraining (tiny model, DeepSpeed ZeRO-2)", pre)
    lines += _section("Evaluation of the pretrained model", _embed_markdown(work / "eval_pretrain" / "eval.md"))
    ft = _embed_markdown(work / "eval_sentiment" / "eval.md")
    ft += _image(work, work / "eval_sentiment" / "classification.png", "sentiment_accuracy.png", "accuracy")
    ft += _image(work, finetune_run / "loss.png", "finetune_loss.png", "fine-tuning loss")
    lines += _section("Sentiment fine-tuning (Rotten Tomatoes, split by movie)", ft)
    lines += _section("Hugging Face export", _generations(work))
    path = work / "report.md"
    path.write_text("\n".join(lines))
    return path
