"""Native families vs their transformers classes (fp32, CPU): import, export, greedy generation.

One tiny random model per family and feature, built by transformers and saved with
save_pretrained: Llama 3.1 rope scaling (llama3), linear rope scaling, SmolLM (tied embeddings),
Mistral with a sliding window shorter than the sequence, Qwen2 (q/k/v biases), Qwen3 (q/k norms
and a head_dim that is not hidden/heads). Export goes through what ``llmtrain import-hf`` writes
(hf_config.json beside the weights) and must come back as the same class.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmtrain.eval.generate import SamplingConfig, generate_ids
from llmtrain.model.transformer import Transformer
from llmtrain.modelio.hf import export_hf, import_hf, read_source_config
from llmtrain.modelio.layout import HF_CONFIG_FILE
from llmtrain.modelio.load import load_model
from llmtrain.modelio.model_dir import save_model_dir

transformers = pytest.importorskip("transformers")

SEQ = 23
_CORE = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
_LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 16, "rope_theta": 10000.0}

# id -> (transformers class names, config kwargs, what our config must show)
CASES = {
    "llama31-rope-llama3": ("LlamaConfig", "LlamaForCausalLM", {"rope_parameters": _LLAMA3},
                            {"rope_scaling.type": "llama3", "rope_scaling.original_max_position_embeddings": 16}),
    "llama-rope-linear": ("LlamaConfig", "LlamaForCausalLM",
                          {"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 500000.0}},
                          {"rope_scaling.type": "linear", "rope_scaling.factor": 4.0, "rope_theta": 500000.0}),
    "smollm-tied": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True}, {"tie_embeddings": True}),
    "mistral-window": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 5}, {"sliding_window": 5}),
    "qwen2-qkv-bias": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True},
                       {"qkv_bias": True, "sliding_window": None}),
    "qwen3-qk-norm-head-dim": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 24},
                               {"qk_norm": True, "head_dim": 24, "qkv_bias": False}),
}


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Distinct random values everywhere (norms and biases too), so any mix-up shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            norm = p.ndim == 1 and "norm" in name
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.ndim == 1 else 0.05) + norm)

def chat_model_dir(case: str, root: Path) -> tuple[torch.nn.Module, Path, Path]:
    """(the family's tiny random transformers model, its directory with a ChatML tokenizer under
    ``root/base``, a chat jsonl of multi-turn conversations) for one case of :data:`CASES`."""
    import transformers
    from chattools import MESSAGES, save_chat_tokenizer

    conf_name, cls_name, over, _ = CASES[case]
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(getattr(transformers, conf_name)(**{**_CORE, **over, "vocab_size": 320}))
    _randomize(model.eval(), seed=2)
    base = root / "base"
    model.save_pretrained(base)
    save_chat_tokenizer(base)
    data = root / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": MESSAGES[k:]}) + "\n" for k in (0, 1, 3) * 4))
    return model, base, data


def _tokens(vocab: int, seed: int = 7) -> torch.Tensor:
    return torch.randint(3, vocab, (2, SEQ), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=list(CASES), scope="module")
def family(request, tmp_path_factory):
    """(case id, HF model, its save_pretrained directory, our config + state dict from import)."""
    conf_name, cls_name, over, _ = CASES[request.param]
    hf_cfg = getattr(transformers, conf_name)(**{**_CORE, **over})
    torch.manual_seed(0)
    hf = getattr(transformers, cls_name)(hf_cfg).eval()
    _randomize(hf, seed=2)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    cfg, sd = import_hf(path)
    return request.param, hf, path, cfg, sd


def _ours(cfg, sd) -> Transformer:
    model = Transformer(cfg).eval()
    model.load_state_dict(sd)
    return model


def test_import_maps_the_feature(family):
    case, _, _, cfg, _ = family
    for field, want in CASES[case][3].items():
        value = cfg
        for part in field.split("."):
            value = getattr(value, part)
        assert value == want, field


def test_import_matches_hf_logits(family):
    _, hf, _, cfg, sd = family
    ours, tokens = _ours(cfg, sd), _tokens(cfg.vocab_size)
    with torch.no_grad():
        diff = (ours(tokens) - hf(tokens).logits).abs().max().item()
    assert diff < 1e-5


def test_export_reloads_as_the_same_class_with_equal_logits(family, tmp_path):
    case, hf, path, cfg, sd = family
    model_dir = save_model_dir(tmp_path / "imported", cfg, sd, hf_config=read_source_config(path))
    loaded = load_model(model_dir)
    assert loaded.hf_config == json.loads((model_dir / HF_CONFIG_FILE).read_text())
    out = export_hf(loaded.model.state_dict(), loaded.config, tmp_path / "export", source_config=loaded.hf_config)
    cls_name = CASES[case][1]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [cls_name]
    assert config["bos_token_id"] == 1 and config["eos_token_id"] == 2  # the source's other fields are kept
    again = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(again).__name__ == cls_name
    tokens = _tokens(cfg.vocab_size, seed=8)
    with torch.no_grad():
        diff = (loaded.model(tokens) - again(tokens).logits).abs().max().item()
        diff_src = (again(tokens).logits - hf(tokens).logits).abs().max().item()
    assert diff < 1e-5 and diff_src < 1e-5


def test_greedy_generation_equals_transformers(family):
    _, hf, _, cfg, sd = family
    ours = _ours(cfg, sd)
    prompt = [1, 17, 42, 5, 88]
    new = 30  # well past Mistral's window of 5 and Llama 3.1's original context of 16
    theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False, eos_token_id=2,
                         pad_token_id=0)[0, len(prompt):].tolist()
    assert len(theirs) > 10  # decoding runs past the window / the original context before any EOS
    assert generate_ids(ours, prompt, SamplingConfig(max_new_tokens=new), eos_id=2) == theirs
    assert generate_ids(ours, prompt, SamplingConfig(max_new_tokens=new), eos_id=2, use_cache=False) == theirs
