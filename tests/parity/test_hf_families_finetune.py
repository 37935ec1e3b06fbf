"""One SFT + LoRA step per native family through the CLI, then its export against transformers and peft.

Each case of ``test_hf_families.CASES`` (Llama 3.1 rope scaling, linear rope scaling, SmolLM tied
embeddings, Mistral sliding window, Qwen2 q/k/v biases, Qwen3 q/k norms) as a chat model directory
(the family's tiny random model + a ChatML tokenizer, both saved with save_pretrained):
`llmtrain finetune --config configs/finetune/sft.yaml` (LoRA on every projection) for one step on CPU,
`llmtrain export`, then the merged export (the family's own class) and the PEFT adapter on the base
give our checkpoint's logits (fp32, 1e-5), and the step changed them.
"""

from __future__ import annotations

import json

import pytest
import torch
from clitools import run_cli
from parity.test_hf_families import CASES, chat_model_dir

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_one_sft_lora_step_exports_merged_and_peft_with_our_logits(case, tmp_path):
    cls_name = CASES[case][1]
    base_model, base, data = chat_model_dir(case, tmp_path)
    run_cli(["finetune", "--config", "configs/finetune/sft.yaml", "--init", str(base),
             *[x for s in ("finetune.dataset=" + str(data), f"checkpoint.dir={tmp_path / 'ck'}", "train.run_name=r",
                           "train.max_steps=1", "train.seq_len=64", "train.micro_batch_size=2",
                           "train.global_batch_size=2", "train.device=cpu", "train.precision=fp32",
                           "train.eval_every=0", "checkpoint.every=0", "finetune.validation_fraction=0",
                           "eval.lm_eval_tasks=[]", "optim.lr=1e-2") for x in ("--set", s)]])
    out = tmp_path / "export"
    run_cli(["export", "--checkpoint", str(tmp_path / "ck" / "r"), "--out", str(out), "--dtype", "fp32"])
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["target_modules"]

    from llmtrain.modelio.load import load_model

    tokens = torch.randint(3, 300, (2, 23), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = load_model(tmp_path / "ck" / "r").model(tokens)
        before = base_model(tokens).logits
        merged = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        assert type(merged).__name__ == cls_name
        adapted = peft.PeftModel.from_pretrained(base_model, str(out / "adapter")).eval()
        torch.testing.assert_close(merged(tokens).logits, ours, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(adapted(tokens).logits, ours, rtol=1e-5, atol=1e-5)
    assert (ours - before).abs().max() > 1e-4  # the LoRA step changed the model
