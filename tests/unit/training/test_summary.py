"""The start-up summary: short, and every figure in it is the run's own (parameters, mixture, batch arithmetic)."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import torch

from llmtrain.config.loader import load_run_config
from llmtrain.config.roots import FinetuneRunConfig
from llmtrain.distributed.env import DistEnv
from llmtrain.model.lora import apply_lora
from llmtrain.model.transformer import Transformer
from llmtrain.training.summary import count_parameters, human, progress_style, summary_lines
from llmtrain.training.task import TrainingTask

ROOT = Path(__file__).resolve().parents[3]
ENV = DistEnv(rank=0, world_size=2, local_rank=0, local_world_size=2, master_addr="127.0.0.1", master_port=29500,
              launcher="torchrun")


def _task(cfg, weights=None, head=None) -> TrainingTask:
    model = Transformer(cfg.model.architecture())
    return TrainingTask(model=model, model_config=cfg.model.architecture(), loss_fn=lambda m, b: (None, None),
                        train_loader=SimpleNamespace(weights=weights, micro_steps_per_step=1), tokens_per_sample=64,
                        head=head)


def test_pretraining_summary_names_every_setting_in_a_few_lines():
    cfg = load_run_config(ROOT / "configs/pretrain/tiny.yaml",
                          ["model.vocab_size=384", "model.n_layers=2", "train.micro_batch_size=2",
                           "train.global_batch_size=8", "train.seq_len=64", "checkpoint.dir=/runs"])
    task = _task(cfg, weights={"json": 3.0, "email": 1.0})
    expected = sum(p.numel() for p in task.model.parameters())
    lines = summary_lines(cfg, ENV, task, device="cpu", config_file=Path("/runs/tiny/config.yaml"),
                          resumed_from=None, progress="lines")
    text = "\n".join(lines)
    assert len(lines) <= 12, text
    assert lines[0] == "[llmtrain] train: tiny"
    assert f"; {human(expected)} parameters (all trainable)" in text
    assert "json 75%, email 25%; seq_len 64, document masking" in text
    assert "global 8 = micro 2 x accumulation 2 x 2 data-parallel rank(s); up to 512 tokens/step" in text
    assert "fp32; ZeRO stage 2" in text and "torchrun, world size 2 on cpu" in text
    assert "/runs/tiny (fresh start)" in text and "/runs/tiny/config.yaml" in text
    assert "(every setting; `llmtrain config explain KEY` says what each means)" in text
    resumed = summary_lines(cfg, ENV, task, device="cpu", config_file=Path("/runs/tiny/config.yaml"),
                            resumed_from=Path("/runs/tiny/step_000100"), progress="lines")
    assert "/runs/tiny (resuming from /runs/tiny/step_000100)" in "\n".join(resumed)


def test_finetuning_summary_shows_the_dataset_task_and_trainable_share():
    cfg = load_run_config(ROOT / "configs/finetune/sentiment.yaml",
                          ["model.vocab_size=384", "model.n_layers=2", "finetune.lora.enabled=true",
                           "finetune.init=/runs/tiny"], FinetuneRunConfig)
    task = _task(cfg, head={"labels": ["rotten", "fresh"]})
    apply_lora(task.model, cfg.finetune.lora)
    total, trainable = count_parameters(task.model)
    assert 0 < trainable < total
    text = "\n".join(summary_lines(cfg, ENV, task, device="cpu", config_file=Path("c.yaml"), resumed_from=None,
                                   progress="lines"))
    assert "[llmtrain] finetune: sentiment-tiny" in text
    assert "rotten_tomatoes for classification (rotten, fresh), LoRA rank 8; seq_len 96; from /runs/tiny" in text
    assert f"{human(total)} parameters ({human(trainable)} trainable)" in text
    assert "global 32 = micro 16 x accumulation 1 x 2" in text


def test_partitioned_parameters_count_at_full_size():
    model = torch.nn.Linear(4, 3)
    for p in model.parameters():  # what ZeRO-3 leaves on a rank: an empty tensor that knows its full size
        p.ds_numel = p.numel()
        p.data = torch.empty(0)
    model.bias.requires_grad_(False)
    assert count_parameters(model) == (15, 12)
    assert (human(418_688), human(1_234_567_890), human(950)) == ("419K", "1.23B", "950")


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_is_a_bar_only_on_a_terminal():
    assert progress_style(True, _Stream(tty=True)) == "lines under a progress bar"
    assert progress_style(True, _Stream(tty=False)) == "lines"
    assert progress_style(False, _Stream(tty=True)) == "lines"
