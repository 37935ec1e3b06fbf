"""One SFT training step from every dataset layout, through the objective's build_task."""

import pytest
import torch
from datasettools import LAYOUTS, write_layout

from llmtrain import objectives
from llmtrain.config.roots import FinetuneRunConfig
from llmtrain.config.schema import FinetuneConfig, TrainConfig
from llmtrain.distributed.env import DistEnv

ENV = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, master_addr="127.0.0.1", master_port=29500,
              launcher="single")


@pytest.mark.parametrize("kind", LAYOUTS)
def test_one_training_step_from_each_layout(kind, model_dir, tmp_path):
    path, over = write_layout(kind, tmp_path)
    cfg = FinetuneRunConfig(train=TrainConfig(seq_len=32, micro_batch_size=2, global_batch_size=2),
                            finetune=FinetuneConfig(task="sft", init=str(model_dir), dataset=str(path),
                                                    validation_fraction=0.2, **over))
    task = objectives.get("sft").build_task(cfg, ENV, torch.device("cpu"))
    batch = task.train_loader.next_batch()
    loss, n = task.loss_fn(task.model, batch)
    assert 4.0 < float(loss.detach()) < 8.0 and int(n) == int((batch["labels"] != -100).sum()) > 0
    loss.backward()
    assert all(p.grad is not None for p in task.model.parameters() if p.requires_grad)
