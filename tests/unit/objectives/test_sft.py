import json

import torch

from llmtrain import objectives
from llmtrain.config.roots import FinetuneRunConfig
from llmtrain.config.schema import FinetuneConfig, LoraConfig, TrainConfig
from llmtrain.distributed.env import DistEnv
from llmtrain.objectives.sft import SftData

ENV = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, master_addr="127.0.0.1", master_port=29500,
              launcher="single")


class ByteTokenizer:
    bos_id, eos_id, pad_id, vocab_size = 1, 2, 0, 259
    bos_prefix = [1]

    def encode(self, text: str) -> list[int]:
        return [b + 3 for b in text.encode()]


def _jsonl(path, n):
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "response": f"r{i}"}) + "\n" for i in range(n)))
    return str(path)


def test_packing_touches_only_the_training_split_and_the_template_is_exported(tmp_path):
    sft = objectives.get("sft")
    ft = FinetuneConfig(task="sft", dataset=_jsonl(tmp_path / "d.jsonl", 60), chat_template="Q:{prompt}\nA:",
                        packing=True, validation_fraction=0.3)
    data = sft.read(ft, ByteTokenizer(), seq_len=32)
    assert isinstance(data, SftData)
    assert all("doc_ids" in row for row in data.splits["train"]) and len(data.splits["train"]) < 42
    assert data.splits["validation"] and not any("doc_ids" in ex for ex in data.splits["validation"])
    files = sft.export_files(data)
    assert files["chat_template.txt"] == "Q:{prompt}\nA:" and set(files) == {"chat_template.txt", "chat_template.jinja"}
    batch = sft.collate(data.splits["train"][:2], pad_id=0, pad_to=32)
    assert set(batch) == {"input_ids", "labels", "attention_mask", "doc_ids"}


def test_evaluator_reads_through_wrappers(tiny_model):
    class Wrapper(torch.nn.Module):  # stands in for the trainer's LossModule inside an engine
        def __init__(self, model):
            super().__init__()
            self.model, self.loss_fn = model, None

    model = tiny_model()
    ex = [{"input_ids": [1, 5, 6], "labels": [-100, 6, 2]}, {"input_ids": [1, 7], "labels": [7, 2]}]
    data = SftData({"train": ex, "validation": ex, "test": []}, {})
    evaluate = objectives.get("sft").evaluator(data, micro_batch_size=2, pad_id=3, device=torch.device("cpu"))
    out = evaluate(Wrapper(model))
    assert set(out) == {"val/loss", "val/ppl"} and out["val/loss"] > 0
    assert objectives.get("sft").evaluator(data, micro_batch_size=2, pad_id=3, device=torch.device("cpu"),
                                           split="test") is None


def test_build_task_with_lora_trains_and_saves_merged_base_names(model_dir, tmp_path):
    cfg = FinetuneRunConfig(train=TrainConfig(seq_len=32, micro_batch_size=2, global_batch_size=4),
                    finetune=FinetuneConfig(task="sft", init=str(model_dir), dataset=_jsonl(tmp_path / "d.jsonl", 40),
                                            lora=LoraConfig(enabled=True, rank=4)))
    task = objectives.get("sft").build_task(cfg, ENV, torch.device("cpu"))
    assert cfg.model.vocab_size == 320 and task.model_config.vocab_size == 320
    assert task.head is None and task.extra_files["chat_template.txt"] == cfg.finetune.chat_template
    assert json.loads(task.extra_files["adapter.json"])["rank"] == 4  # LoRA: the unmerged adapter is saved too
    adapter = task.extra_weights(task.model.state_dict())["adapter.safetensors"]
    assert adapter and all(k.endswith((".lora_A", ".lora_B")) for k in adapter)
    assert task.extra_state["finetune_task"] == "sft" and task.train_loader.micro_steps_per_step == 2
    loss, n = task.loss_fn(task.model, task.train_loader.next_batch())
    assert 4.0 < float(loss.detach()) < 8.0 and int(n) > 0  # untrained: near ln(320) = 5.8
    saved = task.export_state(task.model, task.model.state_dict())
    assert not any("lora_" in k or ".base." in k for k in saved) and "layers.0.attention.wq.weight" in saved
    assert set(task.evaluate(task.model)) == {"val/loss", "val/ppl"}
