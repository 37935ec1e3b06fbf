"""A classification checkpoint exports as the family's *ForSequenceClassification with equal logits."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from llmtrain.cli import main
from llmtrain.data.classification import encode_classification
from llmtrain.data.finetune_loader import collate
from llmtrain.data.tokenizer import load_tokenizer
from llmtrain.model.heads import SequenceClassifier
from llmtrain.modelio.layout import LATEST, STATE, TOKENIZER_SUBDIR
from llmtrain.modelio.load import load_model
from llmtrain.modelio.weights import save_weights

LABELS = ["negative", "neutral", "positive"]
TEXTS = ["ROMEO: a fine play", "dull", "JULIET and Romeo; def f(x): return x + 1", "line 7 of the play"]


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory):
    from data_prep.tokenizer import train_tokenizer

    lines = [f"ROMEO: line {i} of the play, with JULIET and Romeo; def f(x): return x + {i}" for i in range(300)]
    out = tmp_path_factory.mktemp("sp")
    train_tokenizer(lines, out, vocab_size=320, threads=1)
    return out


def _checkpoint(root, make_model, sp_dir, *, pooling="last", pad_id=3, bias=None):
    """A classifier checkpoint; ``bias`` (a value): a head saved with a score bias, as they were before."""
    torch.manual_seed(4)
    clf = SequenceClassifier(make_model(vocab_size=320), len(LABELS), pooling=pooling, pad_id=pad_id,
                             bias=bias is not None)
    torch.nn.init.normal_(clf.score.weight)
    if bias is not None:
        torch.nn.init.constant_(clf.score.bias, bias)
    step = root / "run" / "step_000002"
    step.mkdir(parents=True)
    save_weights(clf.state_dict(), clf.backbone.cfg, step,
                 head={"task": "classification", "labels": LABELS, "pooling": pooling, "pad_id": pad_id})
    (step / STATE).write_text(json.dumps({"step": 2}))
    shutil.copytree(sp_dir, step / TOKENIZER_SUBDIR)
    (root / "run" / LATEST).write_text(step.name)
    return root / "run", clf.eval()


@pytest.mark.parametrize(("kwargs", "pad"), [({}, 3), ({"bias": 0.0}, 3), ({"pad_id": 2}, 1)],
                         ids=["bias-free", "old-zero-bias", "trained-with-eos-pad"])
def test_classifier_exports_with_equal_logits_labels_and_tokenizer(tmp_path, make_model, sp_dir, kwargs, pad):
    """Also a head saved with a zero bias, and one trained with pad = EOS (2): the export pads with BOS (1)."""
    run, clf = _checkpoint(tmp_path, make_model, sp_dir, **kwargs)
    out = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--dtype", "fp32"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["pad_token_id"] == pad
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert config["label2id"] == {"negative": 0, "neutral": 1, "positive": 2}
    assert not (out / "generation_config.json").exists()
    hf = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForSequenceClassification" and hf.num_labels == 3
    # the export's tokenizer gives the ids the classifier was trained on: BOS text EOS
    tok, hf_tok = load_tokenizer(sp_dir), AutoTokenizer.from_pretrained(out)
    records = [{"text": t, "label": LABELS[i % 3]} for i, t in enumerate(TEXTS)]
    examples = encode_classification(records, tok, LABELS, text_field="text", label_field="label", seq_len=64)
    assert [ex["input_ids"] for ex in examples] == hf_tok(TEXTS).input_ids
    batch = collate(examples, pad_id=pad, multiple_of=1)  # right-padded, as in training and evaluation
    assert hf_tok.padding_side == "right" and hf_tok.pad_token_id == pad
    enc = hf_tok(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(enc.input_ids, batch["input_ids"]) and torch.equal(enc.attention_mask, batch["attention_mask"].long())
    with torch.no_grad():
        ours = load_model(run).classifier(batch["input_ids"], batch["attention_mask"])
        theirs = hf(**enc).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, clf(batch["input_ids"], batch["attention_mask"]), rtol=0, atol=0)


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"bias": 0.25}, r"trained bias \(max \|b\| = 0\.25\) and the Hugging Face score layer has none"),
    ({"pooling": "mean"}, r"pools with 'mean', the Hugging Face class pools the last non-pad token"),
])
def test_heads_without_an_exact_hf_counterpart_are_refused_before_writing(tmp_path, make_model, sp_dir, capsys,
                                                                          kwargs, why):
    run, _ = _checkpoint(tmp_path, make_model, sp_dir, **kwargs)
    out = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot be exported as a *ForSequenceClassification with equal logits" in err and "--backbone-only" in err
    import re

    assert re.search(why, err), err
    assert not out.exists() or not any(out.iterdir())
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--backbone-only"]) == 0
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert "--backbone-only: the classification head stays in the checkpoint" in capsys.readouterr().out
