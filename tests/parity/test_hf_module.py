"""Causal LMs of no native family, trained as the transformers module itself (fp32, CPU).

Tiny random Gemma 2 (final logit softcapping, a sliding window shorter than the sequence, tied
embeddings, eager attention), Gemma 3 (text-only), Phi-3 (fused qkv_proj and gate_up_proj) and
OLMo-2 models, built by transformers and saved with save_pretrained, load through ``load_model``:
logits, the chunked loss, document masking and greedy generation with the KV cache must equal
transformers' own. LoRA targets map to the module's own linear layers; what stays unsupported is
refused by the config field.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from llmtrain.errors import CheckpointError
from llmtrain.eval.generate import SamplingConfig, generate_ids
from llmtrain.model.config import LoraConfig
from llmtrain.modelio.hf.generic import HFCausalLM, model_class
from llmtrain.modelio.hf.generic_tuning import apply_hf_lora, lora_module_names
from llmtrain.modelio.load import load_model
from llmtrain.objectives.losses import causal_lm_loss

transformers = pytest.importorskip("transformers")

SEQ = 24
_CORE = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
CASES = {
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(head_dim=16, sliding_window=6, query_pre_attn_scalar=16,
                                                          final_logit_softcapping=5.0)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(head_dim=16, sliding_window=6)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),
}


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            norm = p.ndim == 1 and "norm" in name
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.ndim == 1 else 0.2) + norm)


def _save(tmp_path_factory, case: str):
    conf, cls, over = CASES[case]
    cfg = getattr(transformers, conf)(**{**_CORE, **over})
    torch.manual_seed(0)
    hf = getattr(transformers, cls)(cfg).eval()
    _randomize(hf, seed=3)
    path = tmp_path_factory.mktemp(case)
    hf.save_pretrained(path)
    return hf, path


@pytest.fixture(params=list(CASES), scope="module")
def family(request, tmp_path_factory):
    hf, path = _save(tmp_path_factory, request.param)
    return request.param, hf, path, load_model(path)


def _tokens(seed: int = 7) -> torch.Tensor:
    return torch.randint(3, 101, (2, SEQ), generator=torch.Generator().manual_seed(seed))


def test_logits_and_names_equal_transformers(family):
    case, hf, _, loaded = family
    assert isinstance(loaded.model, HFCausalLM) and type(loaded.model.hf).__name__ == CASES[case][1]
    assert set(loaded.model.state_dict()) == set(hf.state_dict())  # the module's own names, nothing added
    x = _tokens()
    with torch.no_grad():
        ours, theirs = loaded.model(x), hf(x).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert loaded.config.n_layers == 2 and loaded.config.dim == 64 and loaded.config.vocab_size == 101
    if case == "gemma2":  # the features this model stands for are really on
        assert loaded.model.logit_softcap == 5.0 and hf.config._attn_implementation == "eager"
        assert float(theirs.abs().max()) < 5.0 and hf.config.sliding_window < SEQ


def test_chunked_loss_equals_transformers_loss(family):
    """The loss from hidden states and the output weight (softcap applied per chunk) is transformers' loss."""
    _, hf, _, loaded = family
    x = _tokens(8)
    labels = torch.roll(x, -1, dims=1)
    labels[:, -1] = -100
    labels[0, :5] = -100  # a prompt
    loss, n = causal_lm_loss(loaded.model, {"input_ids": x, "labels": labels})
    ref = F.cross_entropy(hf(x).logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert int(n) == int(labels.ne(-100).sum())
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)


def test_packed_documents_do_not_see_each_other(family):
    """With doc_ids each document's logits are those of the document alone (full and sliding layers)."""
    _, hf, _, loaded = family
    x = _tokens(9)
    doc_ids = torch.tensor([[0] * 10 + [1] * 14, [0] * 24])
    with torch.no_grad():
        packed = loaded.model(x, doc_ids=doc_ids)
        alone = hf(x[:1, 10:]).logits
        whole = hf(x[1:]).logits
    torch.testing.assert_close(packed[0, 10:], alone[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(packed[1], whole[0], rtol=0, atol=1e-5)


def test_greedy_generation_with_kv_cache_equals_transformers(family):
    _, hf, _, loaded = family
    prompt = [1, 17, 42, 5, 66, 23, 9]
    ours = generate_ids(loaded.model, prompt, SamplingConfig(max_new_tokens=12))
    theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                         pad_token_id=0)[0, len(prompt):].tolist()
    assert ours == theirs
    assert generate_ids(loaded.model, prompt, SamplingConfig(max_new_tokens=12), use_cache=False) == theirs


def test_lora_targets_map_to_fused_projections(tmp_path_factory):
    hf, path = _save(tmp_path_factory, "phi3")
    model = load_model(path).model
    names = lora_module_names(model, ["wq", "wk", "w1", "w2"])
    assert sorted({n.rpartition(".")[2] for n in names}) == ["down_proj", "gate_up_proj", "qkv_proj"]
    assert lora_module_names(model, ["o_proj"]) == [f"model.layers.{i}.self_attn.o_proj" for i in range(2)]
    with pytest.raises(ValueError, match=r"'wz' is neither one of wq, .* nor a linear layer of Phi3ForCausalLM"):
        lora_module_names(model, ["wz"])
    x = _tokens()
    before = model(x).detach()
    wrapped = apply_hf_lora(model, LoraConfig(enabled=True, rank=4, targets=["wq", "wo", "w1", "w2"]))
    assert len(wrapped) == 8 and all(not p.requires_grad or "lora_" in n for n, p in model.named_parameters())
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)  # B = 0: the base model at step 0
    with torch.no_grad():
        model.get_submodule(wrapped[0]).lora_B.fill_(0.1)
    assert not torch.allclose(model(x), before)  # the adapter is on the forward path


def test_forced_module_path_trains_like_the_native_path(tmp_path_factory):
    """``hf_module=True`` takes a Llama as the transformers module: same loss and gradients as our Transformer."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**_CORE)
    hf = transformers.LlamaForCausalLM(cfg)
    _randomize(hf, seed=4)
    path = tmp_path_factory.mktemp("llama")
    hf.save_pretrained(path)
    native, module = load_model(path), load_model(path, hf_module=True)
    assert not isinstance(native.model, HFCausalLM) and isinstance(module.model, HFCausalLM)
    x = _tokens(10)
    batch = {"input_ids": x, "labels": torch.roll(x, -1, dims=1)}
    a, _ = causal_lm_loss(native.model, batch)
    b, _ = causal_lm_loss(module.model, batch)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(native.model.output.weight.grad, module.model.output.weight.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("override, field", [
    ({"is_encoder_decoder": True, "architectures": ["T5ForConditionalGeneration"]}, "is_encoder_decoder=True"),
    ({"vision_config": {"hidden_size": 8}, "architectures": ["LlavaForConditionalGeneration"]}, "vision_config="),
    ({"num_local_experts": 8, "architectures": ["MixtralForCausalLM"]}, "num_local_experts=8"),
    ({"architectures": ["Phi3ForTokenClassification"]}, "architectures=['Phi3ForTokenClassification']"),
    ({"architectures": ["MadeUpForCausalLM"]}, "architectures='MadeUpForCausalLM'"),
])
def test_unsupported_models_are_refused_by_field(override, field):
    with pytest.raises(CheckpointError, match="cannot train this Hugging Face model: config.json " + field.replace("[", r"\[")):
        model_class({"model_type": "x", "architectures": ["Phi3ForCausalLM"], **override})


def test_refusal_reaches_load_model(tmp_path):
    cfg = {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "num_local_experts": 4}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="num_local_experts=4: mixture-of-experts"):
        load_model(tmp_path)


def test_softcap_applies_on_the_chunked_path(monkeypatch):
    """Logits too large to materialise go through checkpointed chunks: the softcap applies there too."""
    from llmtrain.objectives import losses

    monkeypatch.setattr(losses, "MATERIALIZE_LOGITS_BYTES", 0)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    output = torch.nn.Linear(16, 50, bias=False)
    labels = torch.randint(0, 50, (37,), generator=g)
    labels[:4] = -100
    got = losses.chunked_cross_entropy_sum(hidden, output, labels, chunk_tokens=8, softcap=2.0)
    logits = torch.tanh(output(hidden) / 2.0) * 2.0
    want = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
    (g1,) = torch.autograd.grad(got, hidden)
    (g2,) = torch.autograd.grad(want, hidden)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)
