"""A 3-class classifier from a Hugging Face chat model directory, as a user runs it through the CLI.

`llmtrain finetune` on a user's csv (verse / code / news lines from real text), `llmtrain eval --tasks
classification` (accuracy beside the majority and TF-IDF baselines, label names from the data),
`llmtrain export` as LlamaForSequenceClassification, and transformers on the export: logits equal
ours, same predictions. The tokenizer has no pad token, so training padded with EOS; the export must
declare another pad id, or transformers would pool the token before the final EOS.
"""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import pytest
import torch
from chattools import save_chat_model
from clitools import run_cli

from data_prep.starter import starter_path

LABELS = ["code", "news", "verse"]  # sorted distinct values of the csv's label column
SOURCES = {"verse": "shakespeare", "code": "python_stdlib", "news": "news"}


def _lines(source: str, n: int) -> list[str]:
    out: list[str] = []
    for row in map(json.loads, starter_path(source).read_text().splitlines()):
        # lines of plays and code; sentences of the news articles (one line each)
        out += [ln.strip() for ln in re.split(r"\n|(?<=\.) ", row["text"]) if 30 <= len(ln.strip()) <= 200]
        if len(out) >= 4 * n:
            break
    return random.Random(source).sample(out, n)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clf3")
    model = save_chat_model(root / "chat_model")
    config_path = model / "tokenizer_config.json"  # a tokenizer without a pad token (Llama-style)
    config = json.loads(config_path.read_text())
    config.pop("pad_token", None)
    config_path.write_text(json.dumps(config))
    rows = [{"text": t, "label": label} for label, src in SOURCES.items() for t in _lines(src, 160)]
    random.Random(0).shuffle(rows)
    data = root / "lines.csv"
    with data.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    ck = root / "ck"
    out = run_cli(["finetune", "--config", "configs/finetune/sentiment.yaml", "--init", str(model),
                   "--set", f"finetune.dataset={data}", "--set", "finetune.validation_fraction=0.2",
                   "--set", f"checkpoint.dir={ck}", "--set", "train.run_name=lines", "--set", "train.max_steps=40",
                   "--set", "train.seq_len=64", "--set", "train.micro_batch_size=16", "--set", "train.global_batch_size=16",
                   "--set", "optim.lr=3e-3", "--set", "optim.warmup_steps=2", "--set", "train.eval_every=0",
                   "--set", "checkpoint.every=0", "--set", "eval.lm_eval_tasks=[]", "--set", "logging.log_every=10"],
                  timeout=900)
    assert "fine-tuning classification from" in out.stdout, out.stdout
    return {"root": root, "run": ck / "lines", "data": data}


def test_eval_reports_three_named_classes_beside_both_baselines(run):
    out = run_cli(["eval", "--checkpoint", str(run["run"]), "--tasks", "classification",
                   "--out", str(run["root"] / "eval")])
    results = json.loads((run["root"] / "eval" / "eval.json").read_text())
    table = results["classification"]
    assert set(table) == {"fine-tuned", "majority", "tfidf_logreg"}, table
    for system in table.values():
        assert {f"f1/{name}" for name in LABELS} <= set(system) and system["n"] == table["majority"]["n"] > 30
    # the majority baseline predicts one class: its accuracy is that class's share of the split
    assert table["majority"]["accuracy"] < 0.5 and sum(table["majority"][f"f1/{n}"] > 0 for n in LABELS) == 1
    assert table["tfidf_logreg"]["accuracy"] > 0.8  # verse, code and news are easy for bag-of-words
    assert table["fine-tuned"]["accuracy"] > table["majority"]["accuracy"] + 0.2, table
    md = (run["root"] / "eval" / "eval.md").read_text()
    assert "| system | accuracy | macro_f1 | f1/code | f1/news | f1/verse | n |" in md, md
    print(out.stdout[-400:], json.dumps(table, indent=1))


def test_export_loads_as_llama_for_sequence_classification_with_equal_logits(run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from llmtrain.modelio.load import load_model

    hf_dir = run["root"] / "hf"
    out = run_cli(["export", "--checkpoint", str(run["run"]), "--out", str(hf_dir), "--dtype", "fp32"])
    assert "as a sequence classifier (3 labels)" in out.stdout
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["id2label"] == {"0": "code", "1": "news", "2": "verse"}
    tok = AutoTokenizer.from_pretrained(hf_dir)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    # trained with pad = EOS (no pad token): the export declares another special token, pads on the right
    assert config["pad_token_id"] == tok.pad_token_id == 0 != eos and tok.padding_side == "right"
    hf = AutoModelForSequenceClassification.from_pretrained(hf_dir, dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForSequenceClassification" and hf.config.pad_token_id == 0

    rows = list(csv.DictReader(run["data"].open()))[:24]
    texts = [r["text"] for r in rows]
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    lengths = enc.attention_mask.sum(1)
    assert enc.attention_mask[:, 0].all() and bool((lengths < enc.input_ids.shape[1]).any())  # right padding
    assert all(int(enc.input_ids[i, n - 1]) == eos for i, n in enumerate(lengths.tolist()))  # text EOS
    loaded = load_model(run["run"])
    assert loaded.classifier.score.bias is None  # new heads are bias-free, like HF's
    with torch.no_grad():
        ours = loaded.classifier(enc.input_ids, enc.attention_mask)
        theirs = hf(**enc).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert torch.equal(theirs.argmax(-1), ours.argmax(-1))
    # HF pooled the EOS at each row's last real position: the same logits from each row alone, unpadded
    with torch.no_grad():
        alone = torch.cat([hf(**tok(t, truncation=True, max_length=64, return_tensors="pt")).logits for t in texts[:4]])
    torch.testing.assert_close(alone, theirs[:4], rtol=1e-5, atol=1e-5)
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(hf_dir), tokenizer=str(hf_dir), device="cpu")
    assert [p["label"] for p in clf(texts[:4])] == [LABELS[i] for i in ours[:4].argmax(-1).tolist()]
