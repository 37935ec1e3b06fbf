import json

import pytest
import torch

from llmtrain import objectives
from llmtrain.config.roots import FinetuneRunConfig
from llmtrain.config.schema import FinetuneConfig, TrainConfig
from llmtrain.model.heads import SequenceClassifier
from llmtrain.objectives.classification import ClassificationData

ROWS = [{"input_ids": [1, 5, 2], "labels": [-100] * 3, "class_label": 1},
        {"input_ids": [1, 6, 7, 2], "labels": [-100] * 4, "class_label": 0}]


def test_collate_adds_class_labels_to_the_shared_keys():
    batch = objectives.get("classification").collate(ROWS, pad_id=0)
    assert batch["class_labels"].tolist() == [1, 0]
    assert batch["attention_mask"].sum(1).tolist() == [3, 4]
    assert "class_labels" not in objectives.get("sft").collate(ROWS, pad_id=0)


def test_evaluator_reports_accuracy_and_macro_f1(tiny_model):
    clf = objectives.get("classification")
    data = ClassificationData({"train": ROWS, "validation": ROWS * 3, "test": []}, {}, label_names=["neg", "pos"])
    model, head = clf.build_model(tiny_model(), data, FinetuneConfig(task="classification", pooling="mean"),
                                  pad_id=0, seed=0)
    assert isinstance(model, SequenceClassifier)
    assert head == {"labels": ["neg", "pos"], "pooling": "mean", "pad_id": 0, "task": "classification"}
    out = clf.evaluator(data, micro_batch_size=4, pad_id=0, device=torch.device("cpu"))(model)
    assert set(out) == {"val/accuracy", "val/macro_f1"} and out["val/accuracy"] in (0.0, 0.5, 1.0)
    with pytest.raises(TypeError, match="ClassificationData"):
        clf.build_model(tiny_model(), data=None, ft=FinetuneConfig(), pad_id=0, seed=0)


def test_build_task_puts_the_head_in_head_json(model_dir, tmp_path):
    from llmtrain.distributed.env import DistEnv

    env = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, master_addr="127.0.0.1", master_port=29500,
                  launcher="single")
    rows = [{"review": f"good film {i}" if i % 2 else f"dull plot {i}", "mood": "pos" if i % 2 else "neg"}
            for i in range(40)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = FinetuneRunConfig(train=TrainConfig(seq_len=16, micro_batch_size=4, global_batch_size=4),
                    finetune=FinetuneConfig(task="classification", init=str(model_dir), dataset=str(tmp_path / "d.jsonl"),
                                            text_field="review", label_field="mood"))
    task = objectives.get("classification").build_task(cfg, env, torch.device("cpu"))
    pad_id = task.head["pad_id"]
    assert task.head == {"labels": ["neg", "pos"], "pooling": "last", "pad_id": pad_id, "task": "classification"}
    assert task.extra_files == {} and task.extra_state["finetune_task"] == "classification"
    batch = task.train_loader.next_batch()
    assert batch["class_labels"].shape == (4,)
    loss, n = task.loss_fn(task.model, batch)
    assert int(n) == 4 and 0.3 < float(loss.detach()) < 1.2  # near ln 2 with the small head init
