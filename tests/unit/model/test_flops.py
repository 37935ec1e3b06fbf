"""Parameter counts of the shipped presets against published figures; the FLOPs formula."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmtrain.config.base import build
from llmtrain.config.loader import read_yaml
from llmtrain.config.schema import ModelSection
from llmtrain.model.config import ModelConfig
from llmtrain.model.flops import flops_per_token, model_flops_utilization, num_params
from llmtrain.model.transformer import Transformer

PRESETS = Path(__file__).resolve().parents[3] / "configs" / "model"


def preset(name: str) -> ModelConfig:
    """A preset's architecture (presets are run-config model sections: some set run-time switches)."""
    return build(ModelSection, read_yaml(PRESETS / f"{name}.yaml"), source=name).architecture()


@pytest.mark.parametrize("name, published", [
    ("1b", 1.100e9),  # TinyLlama-1.1B
    ("7b", 6.74e9),  # Llama-2-7B
    ("8b", 8.03e9),  # Llama-3-8B
])
def test_total_parameters_match_published(name, published):
    assert abs(num_params(preset(name)) / published - 1) < 0.01


@pytest.mark.parametrize("name, layers, dim", [("125m", 12, 768), ("350m", 24, 1024)])
def test_gpt3_shaped_presets_match_gpt3_non_embedding_counts(name, layers, dim):
    """GPT-3 Small/Medium: 12 * L * d^2 non-embedding parameters (Kaplan et al. 2020)."""
    assert abs(num_params(preset(name), include_embeddings=False) / (12 * layers * dim**2) - 1) < 0.01


def test_exact_counts_of_known_shapes():
    assert num_params(preset("7b")) == 6_738_415_616  # meta-llama/Llama-2-7b-hf
    assert num_params(preset("8b")) == 8_030_261_248  # meta-llama/Meta-Llama-3-8B
    assert preset("8b").hidden_dim == 14336 and preset("7b").hidden_dim == 11008


def test_tiny_preset_counts_what_it_builds():
    cfg = preset("tiny")
    assert sum(p.numel() for p in Transformer(cfg).parameters()) == num_params(cfg) == 1_787_008


def test_flops_per_token_formula():
    cfg = ModelConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden_dim=128)
    block = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128 + 2 * 64
    assert num_params(cfg, include_embeddings=False) == 2 * block + 64
    n_matmul = 2 * block + 64 + 1000 * 64
    assert flops_per_token(cfg, 256) == 6 * n_matmul + 12 * 2 * 4 * 16 * 256
    assert model_flops_utilization(1e6, cfg, 256, 1e12) == pytest.approx(flops_per_token(cfg, 256) * 1e6 / 1e12)


def test_7b_flops_per_token_at_4k():
    """6N with N = 6.74B - 0.13B input embedding, plus 12*32*32*128*4096 for attention = 46.1 GFLOPs."""
    assert flops_per_token(preset("7b"), 4096) == 46_086_512_640
