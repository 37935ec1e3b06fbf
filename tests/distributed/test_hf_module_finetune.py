"""Fine-tuning causal LMs of no native family through the CLI, 2 ranks on CPU: the transformers module
itself in the same loop (SFT and classification, ZeRO-2 and ZeRO-3, LoRA), resume with identical losses,
and exports that transformers (and peft) load with the same logits.

Models: tiny random Gemma 2 (final logit softcapping, tied embeddings, a sliding window shorter than
the sequence) and Phi-3 (fused qkv_proj / gate_up_proj), saved by transformers with a byte-level BPE
tokenizer that carries a chat template (SFT renders with it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from chattools import TEXTS, save_chat_tokenizer
from clitools import losses_by_step, run_cli, torchrun

from llmtrain.modelio.load import load_model

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

_CORE = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=None, eos_token_id=2)
MODELS = {"gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(head_dim=16, sliding_window=8,
                                                                query_pre_attn_scalar=16, final_logit_softcapping=4.0)),
          "phi3": ("Phi3Config", "Phi3ForCausalLM", {})}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hf_module")
    for name, (conf, cls, over) in MODELS.items():
        torch.manual_seed(0)
        getattr(transformers, cls)(getattr(transformers, conf)(**_CORE, **over)).save_pretrained(root / name)
        save_chat_tokenizer(root / name)
    pairs = [{"prompt": a, "response": b} for a, b in zip(TEXTS[:-1], TEXTS[1:], strict=True)][:60]
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    rows = [{"text": t, "label": "cat" if "cat" in t else "other"} for t in TEXTS[:120]]
    (root / "cls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _finetune(init: Path, ck: Path, task: str, data: Path, zero: int, *extra: str, log: list | None = None) -> Path:
    """``llmtrain finetune`` on 2 ranks; returns the run directory (``log`` receives the output)."""
    recipe = {"sft": "configs/finetune/sft.yaml", "classification": "configs/finetune/sentiment.yaml"}[task]
    sets = [f"finetune.dataset={data}", f"checkpoint.dir={ck}", "train.max_steps=4", "train.seq_len=64",
            "train.micro_batch_size=2", "train.global_batch_size=8", f"train.zero_stage={zero}",
            "finetune.lora.enabled=false", "train.eval_every=2", "logging.log_every=1", "checkpoint.every=2",
            "eval.lm_eval_tasks=[]", "logging.tensorboard=false", "logging.plot=false", *extra]
    out = torchrun(2, ["finetune", "--config", recipe, "--init", str(init)] + [a for s in sets for a in ("--set", s)])
    if log is not None:
        log.append(out.stdout + out.stderr)
    return ck / ("sft-tiny" if task == "sft" else "sentiment-tiny")


def _tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 300, (2, 20), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def gemma_sft(inputs, tmp_path_factory) -> Path:
    """4 SFT steps of Gemma 2 at ZeRO-2 on packed rows (document masking); the reference run."""
    return _finetune(inputs / "gemma2", tmp_path_factory.mktemp("ck"), "sft", inputs / "sft.jsonl", 2,
                     "finetune.packing=true")


def test_sft_checkpoint_keeps_module_names_and_exports_with_save_pretrained(inputs, gemma_sft, tmp_path):
    from safetensors.torch import load_file

    step = gemma_sft / "step_000004"
    saved = load_file(str(step / "model.safetensors"))
    base = load_file(str(inputs / "gemma2" / "model.safetensors"))
    assert set(saved) == set(base)  # the module's own names; lm_head tied to embed_tokens, stored once
    assert all(not torch.equal(saved[k], base[k]) for k in saved if k.endswith("q_proj.weight"))
    assert json.loads((step / "hf_module.json").read_text())["class"] == "Gemma2ForCausalLM"
    out = tmp_path / "export"
    run_cli(["export", "--checkpoint", str(gemma_sft), "--out", str(out), "--dtype", "fp32"])
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Gemma2ForCausalLM"] and config["final_logit_softcapping"] == 4.0
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2
    exported = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ours = load_model(gemma_sft)
    x = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(ours.model(x), exported(x).logits, rtol=0, atol=1e-5)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok("hello there")["input_ids"] == ours.tokenizer.encode_sequence("hello there")
    gen = run_cli(["generate", "--checkpoint", str(gemma_sft), "--prompt", "hi there", "--max-new-tokens", "6"])
    assert "### completion" in gen.stdout
    ev = run_cli(["eval", "--checkpoint", str(gemma_sft), "--tasks", "sft", "--out", str(tmp_path / "ev")])
    assert ev.returncode == 0 and json.loads((tmp_path / "ev" / "eval.json").read_text())["sft"]["validation"]["tokens"] > 0


def test_resume_gives_identical_losses(inputs, gemma_sft, tmp_path):
    reference = losses_by_step(gemma_sft)
    assert sorted(reference) == [1, 2, 3, 4] and reference[4] < reference[1]
    args = (inputs / "gemma2", tmp_path, "sft", inputs / "sft.jsonl", 2, "finetune.packing=true")
    run = _finetune(*args, "train.exit_after_steps=2")
    assert sorted(losses_by_step(run)) == [1, 2]
    _finetune(*args)
    assert losses_by_step(run) == reference


def test_zero3_trains_like_zero2(inputs, gemma_sft, tmp_path):
    """Created partitioned and filled layer by layer from the HF directory: the losses of ZeRO-2."""
    log: list[str] = []
    run = _finetune(inputs / "gemma2", tmp_path, "sft", inputs / "sft.jsonl", 3, "finetune.packing=true", log=log)
    assert "loaded" in log[0] and "layer by layer into the partitions of 2 ranks" in log[0]
    reference, losses = losses_by_step(gemma_sft), losses_by_step(run)
    assert losses.keys() == reference.keys()
    assert all(abs(losses[s] - reference[s]) <= 1e-5 * abs(reference[s]) for s in reference), (losses, reference)
    x = _tokens(1)
    with torch.no_grad():
        torch.testing.assert_close(load_model(run).model(x), load_model(gemma_sft).model(x), rtol=1e-4, atol=1e-4)


def test_phi3_fused_projections_load_into_zero3_partitions(inputs, tmp_path):
    """Phi-3's fused qkv_proj / gate_up_proj filled layer by layer into ZeRO-3 partitions: ZeRO-2's losses."""
    log: list[str] = []
    runs = {zero: _finetune(inputs / "phi3", tmp_path / f"z{zero}", "sft", inputs / "sft.jsonl", zero, log=log)
            for zero in (2, 3)}
    assert "layer by layer into the partitions of 2 ranks" in log[1]
    reference, losses = losses_by_step(runs[2]), losses_by_step(runs[3])
    assert sorted(losses) == [1, 2, 3, 4] and losses[4] < losses[1]
    assert all(abs(losses[s] - reference[s]) <= 1e-5 * abs(reference[s]) for s in reference), (losses, reference)


def test_lora_on_fused_projections_exports_a_peft_adapter(inputs, tmp_path):
    peft = pytest.importorskip("peft")
    run = _finetune(inputs / "phi3", tmp_path / "ck", "sft", inputs / "sft.jsonl", 2, "finetune.lora.enabled=true",
                    "finetune.lora.targets=[wq,wk,wv,wo,w1,w2,w3]", "optim.lr=0.01")
    out = tmp_path / "export"
    run_cli(["export", "--checkpoint", str(run), "--out", str(out), "--dtype", "fp32"])
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    merged = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    base = transformers.AutoModelForCausalLM.from_pretrained(inputs / "phi3").eval()
    x = _tokens(2)
    with torch.no_grad():
        before = base(x).logits
        adapted = peft.PeftModel.from_pretrained(base, out / "adapter").eval()(x).logits
        after = merged(x).logits
    assert (after - before).abs().max() > 1e-3  # the adapter learned something
    torch.testing.assert_close(adapted, after, rtol=0, atol=1e-5)
    base_sd = transformers.AutoModelForCausalLM.from_pretrained(inputs / "phi3").state_dict()
    changed = {k for k, v in merged.state_dict().items() if not torch.equal(v, base_sd[k])}
    assert changed and all(k.endswith(("qkv_proj.weight", "o_proj.weight", "gate_up_proj.weight", "down_proj.weight"))
                           for k in changed)


@pytest.mark.parametrize("family, zero", [("phi3", 2), ("gemma2", 3)])
def test_classification_exports_the_family_sequence_classifier(inputs, tmp_path, request, family, zero):
    """Phi-3 from its HF directory at ZeRO-2; Gemma 2 from the SFT checkpoint (module names, tied
    embeddings) at ZeRO-3 with LoRA, created partitioned and filled layer by layer."""
    init = request.getfixturevalue("gemma_sft") if family == "gemma2" else inputs / family
    log: list[str] = []
    lora = ("finetune.lora.enabled=true", "finetune.lora.targets=[wq,wv,w2]") if zero == 3 else ()
    run = _finetune(init, tmp_path / "ck", "classification", inputs / "cls.jsonl", zero, "optim.lr=3e-3", *lora,
                    log=log)
    assert ("layer by layer into the partitions of 2 ranks" in log[0]) == (zero == 3)
    losses = losses_by_step(run)
    assert sorted(losses) == [1, 2, 3, 4] and losses[4] < losses[1]
    out = tmp_path / "export"
    run_cli(["export", "--checkpoint", str(run), "--out", str(out), "--dtype", "fp32"])
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(exported).__name__ == MODELS[family][1].replace("ForCausalLM", "ForSequenceClassification")
    assert exported.config.id2label == {0: "cat", 1: "other"}
    tok = transformers.AutoTokenizer.from_pretrained(out)
    enc = tok(["tell me a story about a cat", "bye now"], padding=True, return_tensors="pt")
    ours = load_model(run).classifier
    with torch.no_grad():
        torch.testing.assert_close(ours(enc["input_ids"], attention_mask=enc["attention_mask"]),
                                   exported(**enc).logits, rtol=0, atol=1e-5)
