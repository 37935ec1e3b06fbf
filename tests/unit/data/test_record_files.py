"""The user's own fine-tuning files in every local format and layout; malformed rows are named."""

import json

import pytest
from datasettools import LAYOUTS, write_layout

from llmtrain.config.schema import FinetuneConfig
from llmtrain.data.finetune_sets import load_records
from llmtrain.data.record_layouts import ORIGIN_KEY
from llmtrain.errors import DataError
from llmtrain.objectives.classification import Classification
from llmtrain.objectives.sft import Sft


class ByteTok:
    bos_id, eos_id, pad_id = 1, 2, 0
    bos_prefix = [1]

    def encode(self, text):
        return [b + 3 for b in text.encode()]


TOK = ByteTok()
FIRST_TEXT = {  # the prompt side and the trained side of one row of each layout
    "jsonl-mapped": ("U:q{i}\nA:", ["a{i}"]), "json-array-messages": ("U:hi\nA:", ["yo", "ok"]),
    "csv-alpaca-latin1": ("U:Traduis {i}\n\ncafé\nA:", ["réponse {i}"]), "parquet-sharegpt": ("U:q{i}\nA:", ["a{i}"]),
    "arrow-sharegpt": ("U:q{i}\nA:", ["a{i}"]), "saved-dataset": ("U:p{i}\nA:", ["r{i}"]),
    "saved-datasetdict": ("U:p{i}\nA:", ["r{i}"]),
}


@pytest.mark.parametrize("kind", LAYOUTS)
def test_every_layout_is_read_and_encoded(kind, tmp_path):
    path, over = write_layout(kind, tmp_path)
    ft = FinetuneConfig(task="sft", dataset=str(path), chat_template="U:{prompt}\nA:", validation_fraction=0.2, **over)
    records = load_records(ft.dataset, ft.validation_fraction, encoding=ft.csv_encoding)
    assert sum(len(v) for v in records.values()) == 10 and records["train"]
    assert all(str(r[ORIGIN_KEY]).startswith(str(path)) for v in records.values() for r in v)
    data = Sft().read(ft, TOK, seq_len=64)
    ex = data.splits["train"][0]
    i = int(records["train"][0][ORIGIN_KEY].rsplit(" ", 1)[1]) - 1  # rows were written in order, i = 0..9
    prompt, answers = FIRST_TEXT[kind]
    seq = ex["input_ids"] + [ex["labels"][-1]]
    assert seq[:1 + len(TOK.encode(prompt.format(i=i)))] == [1] + TOK.encode(prompt.format(i=i))
    trained = [t for t in ex["labels"] if t != -100]
    assert trained == [t for a in answers for t in TOK.encode(a.format(i=i)) + [2]]
    if kind == "saved-datasetdict":
        assert len(records["train"]) == 8 and len(records["validation"]) == 2


def test_classification_text_and_label_from_parquet(tmp_path):
    import datasets

    path = tmp_path / "train.parquet"
    datasets.Dataset.from_list([{"review": f"film {i}", "stars": ["low", "mid", "high"][i % 3]}
                                for i in range(9)]).to_parquet(str(path))
    ft = FinetuneConfig(task="classification", dataset=str(tmp_path), text_field="review", label_field="stars")
    data = Classification().read(ft, TOK, seq_len=16)
    assert data.label_names == ["high", "low", "mid"] and len(data.splits["train"]) == 9
    assert data.splits["train"][1] == {"input_ids": [1] + TOK.encode("film 1") + [2], "labels": [-100] * 8,
                                       "class_label": 2}


def test_malformed_rows_are_named(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n{"prompt": oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl cannot be read as json.*line 3 is not valid JSON"):
        load_records(str(bad_json))
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "reply": "d"}\n')
    ft = FinetuneConfig(task="sft", dataset=str(missing), validation_fraction=0.0)
    with pytest.raises(DataError, match=r"missing.jsonl row 2: fields \['prompt', 'reply'\] match no SFT layout"):
        Sft().read(ft, TOK, seq_len=32)
    sg = tmp_path / "sg.jsonl"
    sg.write_text(json.dumps({"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]}))
    with pytest.raises(DataError, match=r"sg.jsonl row 1: ShareGPT turn 1 .*needs \"from\" in"):
        Sft().read(FinetuneConfig(task="sft", dataset=str(sg), validation_fraction=0.0), TOK, seq_len=32)
    cls = tmp_path / "cls.csv"
    cls.write_text("text,label\ngood,pos\nbad,neg\nfine,maybe\n")
    ft = FinetuneConfig(task="classification", dataset=str(cls), labels=["neg", "pos"], validation_fraction=0.0)
    with pytest.raises(DataError, match=r"cls.csv row 3: label 'maybe' is not one of \['neg', 'pos'\]"):
        Classification().read(ft, TOK, seq_len=16)
    with pytest.raises(DataError, match=r"cannot be decoded as 'utf-8'.*finetune.csv_encoding"):
        (tmp_path / "l1.csv").write_bytes("text,label\ncafé,1\n".encode("latin-1"))
        load_records(str(tmp_path / "l1.csv"))
