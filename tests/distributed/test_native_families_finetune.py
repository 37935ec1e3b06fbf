"""One SFT step of each native family on 2 data-parallel ranks (ZeRO-2, CPU), then its export.

The features of ``test_hf_families.CASES`` that change the computation most (Llama 3.1 rope scaling,
Mistral's sliding window shorter than the sequence, Qwen2 q/k/v biases, Qwen3 q/k norms with an
explicit head_dim) as chat model directories: ``llmtrain finetune`` under torchrun with 2 ranks, then
``llmtrain export`` loads in transformers as the same class with the checkpoint's logits (fp32, 1e-5).
"""

from __future__ import annotations

import pytest
import torch
from clitools import losses_by_step, run_cli, torchrun
from parity.test_hf_families import CASES, chat_model_dir

from llmtrain.modelio.load import load_model

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("case", ["llama31-rope-llama3", "mistral-window", "qwen2-qkv-bias", "qwen3-qk-norm-head-dim"])
def test_one_sft_step_on_two_ranks_exports_the_same_class(case, tmp_path):
    cls_name = CASES[case][1]
    base_model, base, data = chat_model_dir(case, tmp_path)
    sets = [f"finetune.dataset={data}", f"checkpoint.dir={tmp_path / 'ck'}", "train.run_name=r", "train.max_steps=1",
            "train.seq_len=64", "train.micro_batch_size=2", "train.global_batch_size=4", "train.zero_stage=2",
            "train.precision=fp32", "train.eval_every=0", "checkpoint.every=0", "finetune.validation_fraction=0",
            "finetune.lora.enabled=false", "eval.lm_eval_tasks=[]", "optim.lr=1e-2", "logging.log_every=1",
            "logging.tensorboard=false", "logging.plot=false"]
    torchrun(2, ["finetune", "--config", "configs/finetune/sft.yaml", "--init", str(base),
                 *[x for s in sets for x in ("--set", s)]])
    run = tmp_path / "ck" / "r"
    assert list(losses_by_step(run)) == [1]
    out = tmp_path / "export"
    run_cli(["export", "--checkpoint", str(run), "--out", str(out), "--dtype", "fp32"])
    tokens = torch.randint(3, 300, (2, 23), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = load_model(run).model(tokens)
        exported = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        assert type(exported).__name__ == cls_name
        torch.testing.assert_close(exported(tokens).logits, ours, rtol=1e-5, atol=1e-5)
        assert (ours - base_model(tokens).logits).abs().max() > 1e-4  # the step changed the model
