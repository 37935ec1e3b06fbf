"""SFT from a Hugging Face chat model directory: its template renders the data and is what checkpoints carry."""

import json

import torch
from chattools import MESSAGES, save_chat_model

from llmtrain import objectives
from llmtrain.config.roots import FinetuneRunConfig
from llmtrain.config.schema import FinetuneConfig, TrainConfig
from llmtrain.data.tokenizer import tokenizer_files
from llmtrain.distributed.env import DistEnv

ENV = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, master_addr="127.0.0.1", master_port=29500,
              launcher="single")


def test_build_task_on_a_chat_model_trains_on_its_template_and_carries_it(tmp_path):
    from transformers import AutoTokenizer

    model = save_chat_model(tmp_path / "chat-model")
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": MESSAGES[i % 2:]}) + "\n" for i in range(12)))
    cfg = FinetuneRunConfig(train=TrainConfig(seq_len=96, micro_batch_size=2, global_batch_size=2),
                            finetune=FinetuneConfig(task="sft", init=str(model), dataset=str(data),
                                                    validation_fraction=0.0))
    task = objectives.get("sft").build_task(cfg, ENV, torch.device("cpu"))
    # the tokenizer's template was used: no format string is saved; the template is in the tokenizer files
    assert "chat_template.txt" not in task.extra_files and "chat_template.jinja" not in task.extra_files
    assert any(p.name in ("chat_template.jinja", "tokenizer_config.json") for p in tokenizer_files(task.tokenizer_dir))
    batch = task.train_loader.next_batch()
    hf = AutoTokenizer.from_pretrained(str(model))
    rows = {tuple(hf.apply_chat_template(MESSAGES[k:], tokenize=True, return_dict=False)[:-1]) for k in (0, 1)}
    for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True):
        assert tuple(i for i, m in zip(ids, mask, strict=True) if m) in rows
    loss, n = task.loss_fn(task.model, batch)
    assert 4.0 < float(loss.detach()) < 8.0 and int(n) == sum(int((lab != -100).sum()) for lab in batch["labels"])
    loss.backward()
    assert task.model.layers[0].attention.wq.weight.grad.abs().sum() > 0
