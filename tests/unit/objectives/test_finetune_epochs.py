"""train.epochs as the length of a fine-tune, and warmup clipped to a fraction of it."""

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from clitools import losses_by_step, run_cli

from llmtrain import objectives
from llmtrain.config.base import ConfigError
from llmtrain.config.roots import FinetuneRunConfig, PretrainRunConfig
from llmtrain.config.schema import FINETUNE_WARMUP_FRACTION, FinetuneConfig, OptimConfig, TrainConfig
from llmtrain.distributed.env import DistEnv
from llmtrain.objectives.finetune_schedule import clip_warmup, settle_max_steps, steps_for_epochs

ENV = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, master_addr="127.0.0.1", master_port=29500,
              launcher="single")


def _jsonl(path, n):
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "response": f"r{i}"}) + "\n" for i in range(n)))
    return str(path)


@pytest.mark.parametrize(("epochs", "examples", "batch", "steps"), [
    (1, 40, 4, 10), (1, 41, 4, 11), (2.5, 36, 8, 12), (0.1, 30, 1, 3), (3, 10, 3, 10), (0.01, 5, 32, 1),
])
def test_steps_for_epochs_is_the_ceiling_of_examples_over_batch(epochs, examples, batch, steps):
    assert steps_for_epochs(epochs, examples, batch) == steps


def test_epochs_off_keeps_max_steps_and_epochs_replace_the_default():
    assert settle_max_steps(TrainConfig(max_steps=7), 100) == 7
    t = TrainConfig(epochs=2, global_batch_size=8)
    assert settle_max_steps(t, 20) == 5 and t.max_steps == 5
    # a run's saved config.yaml records both; used again as a recipe it is accepted
    assert settle_max_steps(TrainConfig(epochs=2, global_batch_size=8, max_steps=5), 20) == 5


def test_epochs_with_a_set_max_steps_is_refused_naming_both():
    with pytest.raises(ConfigError) as e:
        settle_max_steps(TrainConfig(epochs=2, global_batch_size=8, max_steps=50), 20)
    text = str(e.value)
    assert "train.epochs" in text and "train.max_steps" in text and "50" in text and "5 steps" in text


def test_pretraining_refuses_epochs():
    assert PretrainRunConfig().check() == []
    problems = PretrainRunConfig(train=TrainConfig(epochs=1.0)).check()
    assert len(problems) == 1 and problems[0].startswith("train.epochs:") and "train.max_steps" in problems[0]
    assert FinetuneRunConfig(train=TrainConfig(epochs=1.0)).check() == []


def test_warmup_is_clipped_to_the_fraction_with_a_notice(caplog):
    assert FINETUNE_WARMUP_FRACTION == 0.1
    o = OptimConfig(warmup_steps=100)
    with caplog.at_level(logging.INFO):
        assert clip_warmup(o, 50) == 5 and o.warmup_steps == 5
    assert "optim.warmup_steps 100" in caplog.text and "clipped to 5" in caplog.text
    caplog.clear()
    o = OptimConfig(warmup_steps=5)
    with caplog.at_level(logging.INFO):
        assert clip_warmup(o, 50) == 5
    assert "clipped" not in caplog.text


def test_build_task_derives_max_steps_from_epochs_and_clips_warmup(model_dir, tmp_path, caplog):
    cfg = FinetuneRunConfig(train=TrainConfig(seq_len=32, micro_batch_size=2, global_batch_size=4, epochs=3),
                            optim=OptimConfig(warmup_steps=20),
                            finetune=FinetuneConfig(task="sft", init=str(model_dir), dataset=_jsonl(tmp_path / "d.jsonl", 42),
                                                    validation_fraction=0))
    with caplog.at_level(logging.INFO):
        task = objectives.get("sft").build_task(cfg, ENV, torch.device("cpu"))
    assert task.model_config.vocab_size == 320
    assert cfg.train.max_steps == 32  # ceil(3 x 42 / 4)
    assert cfg.optim.warmup_steps == 3  # 10% of 32, from 20
    assert "train.epochs 3 over 42 training examples at global batch 4: train.max_steps = 32" in caplog.text
    assert "optim.warmup_steps 20 is over 10% of this fine-tune's 32 steps: clipped to 3" in caplog.text


def test_build_task_refuses_epochs_with_max_steps(model_dir, tmp_path):
    cfg = FinetuneRunConfig(train=TrainConfig(seq_len=32, micro_batch_size=2, global_batch_size=4, epochs=1,
                                              max_steps=3),
                            finetune=FinetuneConfig(task="sft", init=str(model_dir), dataset=_jsonl(tmp_path / "d.jsonl", 20)))
    with pytest.raises(ConfigError, match=r"train\.epochs and train\.max_steps"):
        objectives.get("sft").build_task(cfg, ENV, torch.device("cpu"))


def test_resume_of_an_epochs_run_repeats_the_uninterrupted_losses(model_dir, tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", 24)
    recipe = yaml.safe_load(Path("configs/finetune/sft.yaml").read_text())
    del recipe["train"]["max_steps"]  # an epochs recipe leaves max_steps out
    recipe["model"]["base"] = str(Path("configs/model/tiny.yaml").resolve())
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(recipe))

    def finetune(ck, *extra):
        sets = [f"finetune.dataset={data}", f"checkpoint.dir={ck}", "train.run_name=e", "train.epochs=1",
                "train.seq_len=32", "train.micro_batch_size=2", "train.global_batch_size=4", "train.precision=fp32",
                "train.device=cpu", "optim.warmup_steps=100", "logging.log_every=1", "logging.tensorboard=false",
                "logging.plot=false", "finetune.validation_fraction=0", *extra]
        args = ["finetune", "--config", str(tmp_path / "sft.yaml"), "--init", str(model_dir)]
        for s in sets:
            args += ["--set", s]
        return run_cli(args)

    whole = finetune(tmp_path / "a")
    assert "train.max_steps = 6" in whole.stdout + whole.stderr and "clipped to 0" in whole.stdout + whole.stderr
    finetune(tmp_path / "b", "train.exit_after_steps=3")
    finetune(tmp_path / "b")
    a, b = losses_by_step(tmp_path / "a" / "e"), losses_by_step(tmp_path / "b" / "e")
    assert sorted(a) == [1, 2, 3, 4, 5, 6] and sorted(b) == sorted(a)
    assert all(a[s] == pytest.approx(b[s], rel=1e-6, abs=1e-6) for s in a)


def test_export_of_a_fallback_format_fine_tune_carries_the_training_chat_template(model_dir, tmp_path):
    from transformers import AutoTokenizer

    from llmtrain.data.chat import JINJA_TEMPLATE_FILE

    data = _jsonl(tmp_path / "d.jsonl", 8)
    recipe = yaml.safe_load(Path("configs/finetune/sft.yaml").read_text())
    recipe["model"]["base"] = str(Path("configs/model/tiny.yaml").resolve())
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(recipe))
    args = ["finetune", "--config", str(tmp_path / "sft.yaml"), "--init", str(model_dir)]
    for s in [f"finetune.dataset={data}", f"checkpoint.dir={tmp_path / 'ck'}", "train.run_name=x", "train.max_steps=1",
              "train.seq_len=32", "train.micro_batch_size=2", "train.global_batch_size=2", "train.precision=fp32",
              "train.device=cpu", "logging.tensorboard=false", "logging.plot=false", "finetune.validation_fraction=0"]:
        args += ["--set", s]
    run_cli(args)
    step = tmp_path / "ck" / "x" / "step_000001"
    trained = (step / JINJA_TEMPLATE_FILE).read_text()
    run_cli(["export", "--checkpoint", str(tmp_path / "ck" / "x"), "--out", str(tmp_path / "hf")])
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["chat_template"] == trained
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    messages = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}]
    text = tok.apply_chat_template(messages, tokenize=False)
    fmt = recipe["finetune"].get("chat_template", "<|user|>\n{prompt}\n<|assistant|>\n")
    bos = tok.bos_token if "bos_token and true" in trained else ""  # training added BOS (format_to_jinja)
    assert text == f"{bos}{fmt.replace('{prompt}', 'hello there')}hi{tok.eos_token}"
