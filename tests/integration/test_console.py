"""What a user reads: a tiny 2-rank run prints a short start-up summary and no warning at all, pretraining
and fine-tuning alike, and fine-tuning throughput counts real tokens, not padding."""

from __future__ import annotations

import json
import random
import re

from clitools import read_train_metrics, tiny_train_args, torchrun

from data_prep.starter import starter_path

WARNING = re.compile(r"warn", re.I)  # FutureWarning, UserWarning, [WARNING], "W1201 ... warn", ...


def _summary(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return block


def _quiet(proc) -> str:
    out = proc.stdout + proc.stderr
    noisy = [line for line in out.splitlines() if WARNING.search(line)]
    assert noisy == [], "\n".join(noisy)
    assert "resolved config:" not in out and "max_consecutive_nonfinite" not in out  # no YAML dump
    return out


def _classification_set(root) -> str:
    lines = []
    for name, label in (("shakespeare", "verse"), ("python_stdlib", "code")):
        for row in map(json.loads, starter_path(name).read_text().splitlines()):
            lines += [(t.strip(), label) for t in row["text"].splitlines() if len(t.strip()) >= 25]
            if sum(1 for _, lab in lines if lab == label) >= 120:
                break
    random.Random(0).shuffle(lines)
    root.mkdir()
    for split, part in (("train", lines[:160]), ("validation", lines[160:200]), ("test", lines[200:])):
        (root / f"{split}.jsonl").write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in part))
    return str(root)


def test_tiny_two_rank_runs_print_a_short_summary_and_no_warning(tiny_data, tmp_path):
    # OMP_NUM_THREADS is set (tests/clitools.cli_env), as launch/torchrun.sh and docs/launching.md do: unset,
    # torchrun itself prints a banner before any llmtrain code runs
    pre = torchrun(2, tiny_train_args(tiny_data, tmp_path / "pre", "train.max_steps=3", "train.zero_stage=2",
                                      "logging.log_every=1"))
    out = _quiet(pre)
    summary = _summary(pre.stdout, "[llmtrain] train: t")
    assert len(summary) <= 20, "\n".join(summary)
    text = "\n".join(summary)
    for fact in ("shakespeare 60%, code 40%", "global 8 = micro 2 x accumulation 2 x 2 data-parallel rank(s)",
                 "fp32; ZeRO stage 2", "torchrun, world size 2 on cpu", str(tmp_path / "pre" / "t" / "config.yaml")):
        assert fact in text, text
    assert (tmp_path / "pre" / "t" / "config.yaml").is_file()
    assert "[llmtrain] done: 3 steps" in out
    # pretraining rows are packed: every position is a real token
    assert all(round(r["tokens_per_s"] * r["step_time_s"]) == 8 * 64 for r in read_train_metrics(tmp_path / "pre" / "t"))

    ft = torchrun(2, ["finetune", "--config", "configs/finetune/sentiment.yaml", "--init", str(tmp_path / "pre" / "t"),
                      "--set", f"finetune.dataset={_classification_set(tmp_path / 'ds')}",
                      "--set", f"checkpoint.dir={tmp_path / 'ft'}", "--set", "train.max_steps=2",
                      "--set", "train.seq_len=64", "--set", "train.micro_batch_size=4",
                      "--set", "train.global_batch_size=8", "--set", "train.eval_every=0",
                      "--set", "logging.log_every=1", "--set", "logging.tensorboard=false",
                      "--set", "logging.plot=false", "--set", "eval.lm_eval_tasks=[]"])
    out = _quiet(ft)
    summary = _summary(ft.stdout, "[llmtrain] finetune: sentiment-tiny")
    assert len(summary) <= 20 and "for classification (code, verse)" in "\n".join(summary), "\n".join(summary)
    assert "[llmtrain] fine-tuning done: 2 steps" in out
    # one-line snippets right-padded to the batch's longest: the counted tokens are far fewer than 8 x 64
    counted = [r["tokens_per_s"] * r["step_time_s"] for r in read_train_metrics(tmp_path / "ft" / "sentiment-tiny")]
    assert len(counted) == 2 and all(0 < c < 0.75 * 8 * 64 and abs(c - round(c)) < 1e-6 for c in counted), counted
