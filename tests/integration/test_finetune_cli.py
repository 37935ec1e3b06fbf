"""Fine-tuning through the CLI from what pretraining wrote: a 2-rank ZeRO-3 checkpoint on 1 rank (SFT),
and a Hugging Face export (classification + LoRA on 2 ranks), evaluated against the majority baseline."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from clitools import run_cli, tiny_train_args, torchrun

from data_prep.starter import starter_path


@pytest.fixture(scope="module")
def zero3_checkpoint(tiny_data, tmp_path_factory) -> Path:
    """A 2-rank ZeRO-3 pretraining run on the real tiny corpus; returns the run directory."""
    ck = tmp_path_factory.mktemp("pre")
    torchrun(2, tiny_train_args(tiny_data, ck, "train.zero_stage=3", "train.max_steps=6"))
    return ck / "t"


def _lines(name: str, n: int, min_len: int = 25) -> list[str]:
    out = []
    for row in map(json.loads, starter_path(name).read_text().splitlines()):
        out += [ln.strip() for ln in row["text"].splitlines() if len(ln.strip()) >= min_len]
        if len(out) >= n:
            break
    return out[:n]


def test_sft_from_zero3_checkpoint_on_one_rank(zero3_checkpoint, tmp_path):
    lines = _lines("shakespeare", 120)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": a, "response": b}) + "\n" for a, b in zip(lines[::2], lines[1::2], strict=True)))
    out = run_cli(["finetune", "--config", "configs/finetune/sft.yaml", "--init", str(zero3_checkpoint),
                   "--set", f"finetune.dataset={data}", "--set", f"checkpoint.dir={tmp_path / 'ck'}",
                   "--set", "train.max_steps=4", "--set", "train.seq_len=64", "--set", "train.micro_batch_size=4",
                   "--set", "train.global_batch_size=8", "--set", "train.eval_every=2", "--set", "logging.log_every=1"])
    assert "fine-tuning sft from" in out.stdout and "fine-tuning done: 4 steps" in out.stdout
    step = tmp_path / "ck" / "sft-tiny" / "step_000004"
    assert (step / "chat_template.txt").read_text() == "<|user|>\n{prompt}\n<|assistant|>\n"
    records = [json.loads(x) for x in (tmp_path / "ck" / "sft-tiny" / "metrics.jsonl").read_text().splitlines()]
    assert any("val/loss" in r for r in records)
    # LoRA was on (sft.yaml) and is merged at save: base model names, no adapter tensors
    from safetensors.torch import load_file

    saved = load_file(str(step / "model.safetensors"))
    assert not any("lora_" in k or ".base." in k for k in saved)
    init = load_file(str(zero3_checkpoint / "step_000006" / "model.safetensors"))
    assert saved.keys() == init.keys()
    changed = [k for k in saved if not torch.equal(saved[k], init[k].to(saved[k].dtype))]
    assert changed and all(k.endswith(("wq.weight", "wk.weight", "wv.weight", "wo.weight", "w1.weight", "w2.weight", "w3.weight"))
                           for k in changed)
    gen = run_cli(["generate", "--checkpoint", str(tmp_path / "ck" / "sft-tiny"), "--prompt", lines[0], "--max-new-tokens", "8"])
    assert gen.returncode == 0


def test_classification_from_hf_directory_beats_majority(zero3_checkpoint, tmp_path):
    rng = random.Random(0)
    rows = [{"text": t, "label": "verse"} for t in _lines("shakespeare", 360)]
    rows += [{"text": t, "label": "code"} for t in _lines("python_stdlib", 240)]
    rng.shuffle(rows)
    ds = tmp_path / "ds"
    ds.mkdir()
    for split, part in (("train", rows[:400]), ("validation", rows[400:480]), ("test", rows[480:])):
        (ds / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    hf = tmp_path / "hf"
    run_cli(["export", "--checkpoint", str(zero3_checkpoint), "--out", str(hf), "--dtype", "fp32"])
    assert (hf / "config.json").is_file() and (hf / "tokenizer.model").is_file()
    ck = tmp_path / "ck"
    torchrun(2, ["finetune", "--config", "configs/finetune/sentiment.yaml", "--init", str(hf),
                 "--set", f"finetune.dataset={ds}", "--set", "finetune.lora.enabled=true", "--set", "finetune.pooling=mean",
                 "--set", f"checkpoint.dir={ck}", "--set", "train.max_steps=80", "--set", "train.zero_stage=2",
                 "--set", "train.seq_len=64", "--set", "train.micro_batch_size=8", "--set", "train.global_batch_size=16",
                 "--set", "optim.lr=3e-3", "--set", "optim.warmup_steps=5", "--set", "train.eval_every=40",
                 "--set", "eval.lm_eval_tasks=[]"])
    run_dir = ck / "sentiment-tiny"
    head = json.loads((run_dir / "step_000080" / "head.json").read_text())
    assert head["labels"] == ["code", "verse"] and head["pooling"] == "mean"
    run_cli(["eval", "--checkpoint", str(run_dir), "--tasks", "classification", "--out", str(tmp_path / "ev")])
    res = json.loads((tmp_path / "ev" / "eval.json").read_text())["classification"]
    assert res["fine-tuned"]["accuracy"] > res["majority"]["accuracy"] + 0.05, res
