"""A LoRA fine-tune exports merged weights plus a PEFT adapter that peft loads onto the base to the same logits."""

import json

import pytest
import torch

from llmtrain.cli import main
from llmtrain.data.tokenizer import load_tokenizer
from llmtrain.modelio.hf import export_hf
from llmtrain.modelio.layout import ADAPTER_SETTINGS, ADAPTER_WEIGHTS

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory):
    from data_prep.tokenizer import train_tokenizer

    lines = [f"ROMEO: line {i} of the play, with JULIET and Romeo; def f(x): return x + {i}" for i in range(300)]
    out = tmp_path_factory.mktemp("sp")
    train_tokenizer(lines, out, vocab_size=320, threads=1)
    return out


def _lora_checkpoint(tmp_path, make_model, sp_dir, targets):
    """A base HF directory and a checkpoint of a few real LoRA steps on it (saved by the checkpoint manager)."""
    from llmtrain import objectives
    from llmtrain.config.roots import FinetuneRunConfig
    from llmtrain.config.schema import FinetuneConfig, LoraConfig, TrainConfig
    from llmtrain.distributed.env import DistEnv
    from llmtrain.training.checkpointing import CheckpointManager, Progress

    model = make_model(vocab_size=load_tokenizer(sp_dir).vocab_size)
    base = export_hf(model.state_dict(), model.cfg, tmp_path / "base", tokenizer_dir=sp_dir)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "ROMEO:", "response": f" line {i} of the play"}) + "\n"
                            for i in range(16)))
    cfg = FinetuneRunConfig(train=TrainConfig(seq_len=24, micro_batch_size=4, global_batch_size=4),
                            finetune=FinetuneConfig(task="sft", init=str(base), dataset=str(data),
                                                    lora=LoraConfig(enabled=True, rank=4, alpha=8.0, targets=targets)))
    env = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, master_addr="127.0.0.1",
                  master_port=29500, launcher="single")
    task = objectives.get("sft").build_task(cfg, env, torch.device("cpu"))
    opt = torch.optim.Adam([p for p in task.model.parameters() if p.requires_grad], lr=0.02)
    for _ in range(3):
        loss, _n = task.loss_fn(task.model, task.train_loader.next_batch())
        loss.backward()
        opt.step()
        opt.zero_grad()

    class StatesOnDisk:
        config = {"engine": "test"}

        def save(self, run_dir, tag):
            (run_dir / tag).mkdir(parents=True, exist_ok=True)

        def full_state_dict(self):
            return task.model.state_dict()

    manager = CheckpointManager(tmp_path / "run", resume="never", keep_last=2, rank=0, world_size=1)
    manager.save(StatesOnDisk(), Progress(step=3), task, run_config=cfg, global_batch_size=4, zero_stage=0,
                 precision="fp32")
    return base, tmp_path / "run", task


def test_peft_adapter_on_the_base_equals_the_merged_export(tmp_path, make_model, sp_dir):
    from transformers import AutoModelForCausalLM

    base, run, task = _lora_checkpoint(tmp_path, make_model, sp_dir, ["wq", "wv", "wo", "w1", "w2", "w3"])
    step = run / "step_000003"
    settings = json.loads((step / ADAPTER_SETTINGS).read_text())
    assert settings == {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["wq", "wv", "wo", "w1", "w2", "w3"],
                        "init": str(base)}
    from safetensors.torch import load_file

    saved = load_file(str(step / ADAPTER_WEIGHTS))
    assert len(saved) == 2 * 6 * 2 and all(".lora_" in k for k in saved)  # A and B, 6 targets, 2 layers
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--dtype", "fp32"]) == 0
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == (4, 8.0, str(base))
    assert config["target_modules"] == ["down_proj", "gate_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    adapted = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                             out / "adapter").eval()
    plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    tokens = torch.randint(0, 320, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = merged(tokens).logits
        got = adapted(tokens).logits
        ours = task.model.eval()(tokens)
        untouched = plain(tokens).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)
    assert (untouched - want).abs().max() > 1e-3  # the adapter changed the model


def test_no_adapter_flag_and_full_fine_tunes_write_none(tmp_path, make_model, sp_dir):
    _, run, _ = _lora_checkpoint(tmp_path, make_model, sp_dir, ["wq", "wk"])
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--no-adapter"]) == 0
    assert (out / "config.json").is_file() and not (out / "adapter").exists()
