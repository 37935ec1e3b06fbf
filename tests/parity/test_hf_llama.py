"""Our Transformer vs transformers.LlamaForCausalLM with the same weights (fp32, CPU).

Covers export (ours -> HF dir -> from_pretrained), import (HF save_pretrained -> ours) and the
HF -> ours -> HF round trip, for MHA and GQA, tied and untied embeddings, two RoPE thetas.
"""

from __future__ import annotations

import pytest
import torch

from llmtrain.model.config import ModelConfig
from llmtrain.model.transformer import Transformer
from llmtrain.modelio.hf import export_hf, hf_config, import_hf

transformers = pytest.importorskip("transformers")

SHAPES = [pytest.param(n_kv, tie, theta, id=f"kv{n_kv}-{'tied' if tie else 'untied'}-theta{int(theta)}")
          for n_kv in (4, 2) for tie in (False, True) for theta in (10000.0, 500000.0)]


def _config(n_kv: int, tie: bool, theta: float) -> ModelConfig:
    return ModelConfig(vocab_size=101, dim=64, n_layers=2, n_heads=4, n_kv_heads=n_kv, ffn_hidden_dim=96,
                       max_seq_len=64, rope_theta=theta, tie_embeddings=tie)  # auto = sdpa on CPU


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Give every weight (norms included) distinct random values, so any mix-up shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.ndim == 1 else 0.05) + (p.ndim == 1))


def _tokens(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 23), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("n_kv, tie, theta", SHAPES)
def test_export_matches_hf_logits(tmp_path, n_kv, tie, theta):
    cfg = _config(n_kv, tie, theta)
    ours = Transformer(cfg).eval()
    _randomize(ours, seed=1)
    export_hf(ours.state_dict(), cfg, tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.float32).eval()
    assert hf.config.num_key_value_heads == n_kv and hf.config.tie_word_embeddings == tie
    tokens = _tokens(cfg.vocab_size)
    with torch.no_grad():
        diff = (ours(tokens) - hf(tokens).logits).abs().max().item()
    assert diff < 1e-5


@pytest.mark.parametrize("n_kv, tie, theta", SHAPES)
def test_import_matches_hf_logits(tmp_path, n_kv, tie, theta):
    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in hf_config(_config(n_kv, tie, theta), torch.float32).items()
                                         if k not in ("architectures", "model_type", "torch_dtype", "dtype")})
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    _randomize(hf, seed=2)
    hf.save_pretrained(tmp_path)
    cfg, sd = import_hf(tmp_path)
    assert (cfg.kv_heads, cfg.tie_embeddings, cfg.rope_theta) == (n_kv, tie, theta)
    ours = Transformer(cfg).eval()
    ours.load_state_dict(sd)
    tokens = _tokens(cfg.vocab_size)
    with torch.no_grad():
        diff = (ours(tokens) - hf(tokens).logits).abs().max().item()
    assert diff < 1e-5


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hf_ours_hf_round_trip_is_bit_identical(tmp_path, tie, dtype):
    from safetensors.torch import load_file

    hf_cfg = transformers.LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie,
                                      rope_theta=500000.0, max_position_embeddings=64)
    hf = transformers.LlamaForCausalLM(hf_cfg).to(dtype)
    _randomize(hf, seed=3)
    hf.save_pretrained(tmp_path / "a")
    cfg, sd = import_hf(tmp_path / "a")
    export_hf(sd, cfg, tmp_path / "b", dtype=None)
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype == dtype and torch.equal(a[k], b[k]), k
    again = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "b").config
    rope = getattr(again, "rope_parameters", None) or {}  # transformers 5 moved rope_theta here
    assert rope.get("rope_theta", getattr(again, "rope_theta", None)) == 500000.0
