import json
from collections import Counter

import pytest
import torch

from llmtrain.config.schema import FinetuneConfig
from llmtrain.data.finetune_loader import FinetuneBatchIterator, eval_batches
from llmtrain.data.finetune_sets import chatterbot, load_records, rotten_tomatoes
from llmtrain.data.sft import encode_example, pack_examples, prompt_and_response
from llmtrain.errors import DataError
from llmtrain.objectives.classification import Classification
from llmtrain.objectives.sft import Sft


class ByteTokenizer:
    """Bytes shifted by 3 (0 pad, 1 bos, 2 eos): enough to check masking and lengths exactly."""

    bos_id, eos_id, pad_id, vocab_size = 1, 2, 0, 259
    bos_prefix = [1]

    def encode(self, text: str) -> list[int]:
        return [b + 3 for b in text.encode()]


TOK = ByteTokenizer()


def test_rotten_tomatoes_is_split_by_movie():
    splits = rotten_tomatoes()
    sizes = {s: len(v) for s, v in splits.items()}
    assert sum(sizes.values()) == 7403 + 5405
    assert Counter(r["label"] for s in splits.values() for r in s) == {1: 7403, 0: 5405}
    movies = {s: {r["movie"] for r in v} for s, v in splits.items()}
    assert not movies["train"] & movies["test"]
    assert not movies["train"] & movies["validation"]
    assert not movies["validation"] & movies["test"]
    assert 0.75 < sizes["train"] / 12808 < 0.85 and sizes["test"] > 800
    assert rotten_tomatoes()["test"][:5] == splits["test"][:5]  # deterministic


def test_chatterbot_pairs_and_held_out_split():
    splits = chatterbot(0.1)
    assert len(splits["train"]) > 1000 and len(splits["validation"]) > 50 and not splits["test"]
    keys = {s: {r["key"] for r in v} for s, v in splits.items()}
    assert not keys["train"] & keys["validation"]
    rec = next(r for r in splits["train"] if r["messages"][0]["content"] == "What is AI?")
    prompt, response = prompt_and_response(rec, "<|user|>\n{prompt}\n<|assistant|>\n")
    assert prompt == "<|user|>\nWhat is AI?\n<|assistant|>\n"
    assert response.startswith("Artificial Intelligence is the branch")


def test_sft_example_labels_only_the_response_and_eos():
    ex = encode_example(TOK, "Q:", "ok", seq_len=16)
    # sequence BOS Q : o k EOS -> inputs drop the last token, labels drop the first
    assert ex["input_ids"] == [1, ord("Q") + 3, ord(":") + 3, ord("o") + 3, ord("k") + 3]
    assert ex["labels"] == [-100, -100, ord("o") + 3, ord("k") + 3, 2]


def test_long_examples_keep_the_response_and_the_end_of_the_prompt():
    ex = encode_example(TOK, "abcdefghij", "xyz", seq_len=8)
    assert len(ex["input_ids"]) == 8
    assert ex["input_ids"][0] == 1 and ex["input_ids"][1:5] == [ord(c) + 3 for c in "ghij"]
    assert [t for t in ex["labels"] if t != -100] == [ord(c) + 3 for c in "xyz"] + [2]


def test_packing_marks_documents():
    a, b, c = (encode_example(TOK, "p", r, 16) for r in ("ab", "cde", "fghijklmnop"))
    rows = pack_examples([a, b, c], seq_len=12)
    assert [len(r["input_ids"]) for r in rows] == [4 + 5, 13 - 1]
    assert rows[0]["doc_ids"] == [0] * 4 + [1] * 5
    assert rows[0]["labels"] == a["labels"] + b["labels"]


def test_messages_and_prompt_records_from_a_jsonl_file(tmp_path):
    path = tmp_path / "chat.jsonl"
    rows = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(40)]
    rows.append({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                              {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"},
                              {"role": "assistant", "content": "ciao"}]})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = Sft().read(FinetuneConfig(task="sft", dataset=str(path), chat_template="U:{prompt}\nA:",
                                     validation_fraction=0.25), TOK, seq_len=64)
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 41
    assert 4 <= len(data.splits["validation"]) <= 18
    assert prompt_and_response(rows[-1], "U:{prompt}\nA:") == ("Be brief.\nU:hi\nA:hello\nU:bye\nA:", "ciao")


def test_classification_csv_with_named_labels(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("sentence,mood\ngood film,pos\nbad film,neg\nfine,pos\n")
    ft = FinetuneConfig(task="classification", dataset=str(tmp_path), text_field="sentence", label_field="mood")
    data = Classification().read(ft, TOK, seq_len=6)
    assert data.label_names == ["neg", "pos"]
    first = data.splits["train"][0]
    assert first["class_label"] == 1 and first["input_ids"] == [1] + TOK.encode("good")[:4] + [2]
    with pytest.raises(DataError, match="named set"):
        load_records(str(tmp_path / "missing.jsonl"))


def _dataset(n):
    return [{"input_ids": [i + 3, i + 4], "labels": [i + 4, 2], "class_label": i % 2} for i in range(n)]


def test_loader_follows_the_global_index_rule_across_dp_sizes():
    data = _dataset(10)
    kw = dict(seq_len=8, global_batch_size=4, seed=7, pad_id=0)
    one = FinetuneBatchIterator(data, micro_batch_size=2, dp_rank=0, dp_size=1, **kw)
    assert one.micro_steps_per_step == 2
    seen1 = [one.next_batch()["input_ids"][:, 0].tolist() for _ in range(6)]  # 3 steps
    ranks = [FinetuneBatchIterator(data, micro_batch_size=2, dp_rank=r, dp_size=2, **kw) for r in range(2)]
    assert ranks[0].micro_steps_per_step == 1
    seen2 = [[it.next_batch()["input_ids"][:, 0].tolist() for it in ranks] for _ in range(3)]
    for step in range(3):
        assert sorted(seen1[2 * step] + seen1[2 * step + 1]) == sorted(seen2[step][0] + seen2[step][1])
    epoch0 = [x for b in seen1[:5] for x in b]
    assert sorted(epoch0) == [i + 3 for i in range(10)]  # each sample once per epoch


def test_loader_resume_continues_identically():
    data = _dataset(7)
    kw = dict(seq_len=8, micro_batch_size=2, global_batch_size=2, dp_rank=0, dp_size=1, seed=3, pad_id=0)
    a = FinetuneBatchIterator(data, **kw)
    for _ in range(5):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    b = FinetuneBatchIterator(data, **kw)
    b.load_state_dict(state)
    for _ in range(4):
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
    assert state["consumed_samples"] == 10


def test_eval_batches_give_every_rank_the_same_number_of_batches():
    data = _dataset(5)
    per_rank = [list(eval_batches(data, micro_batch_size=2, pad_id=0, dp_rank=r, dp_size=2)) for r in range(2)]
    assert [len(b) for b in per_rank] == [2, 2]
    valid = [int(b["valid"].sum()) for bs in per_rank for b in bs]
    assert sum(valid) == 5
    last = per_rank[1][-1]
    assert last["valid"].tolist() == [0] and (last["labels"] == -100).all()
    assert per_rank[0][0]["input_ids"].shape == (2, 8)  # right-padded to a multiple of 8
