"""Architecture options of ModelConfig: sliding window, q/k/v biases, q/k norms, head_dim, RoPE scaling.

Sliding-window behaviour is checked directly (a token outside every receptive field has no
influence; packed documents equal each document alone; KV-cache decoding equals the full forward).
Parity with the transformers families is in tests/parity/test_hf_families.py.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from llmtrain.config.base import ConfigError, build
from llmtrain.model.attention import attention, build_layout
from llmtrain.model.config import ModelConfig, RopeScaling
from llmtrain.model.flops import flops_per_token, num_params
from llmtrain.model.kv_cache import KVCache
from llmtrain.model.rope import inverse_frequencies
from llmtrain.modelio.layout import read_model_config, write_model_config

W, L, T = 4, 2, 20  # window, layers, sequence: a token reaches L*(W-1) = 6 positions ahead at most
REACH = L * (W - 1)


def _tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 97, (2, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_a_token_outside_the_window_has_no_influence(backend, make_model):
    model = make_model(sliding_window=W, n_layers=L, attention_backend=backend)
    tokens = _tokens()
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 97
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :5], b[:, :5])
    assert (a[:, 5] - b[:, 5]).abs().max().item() > 1e-3  # the perturbation is real
    assert torch.equal(a[:, 5 + REACH + 1:], b[:, 5 + REACH + 1:])
    full = make_model(n_layers=L, attention_backend=backend)  # same weights without the window
    with torch.no_grad():
        assert (full(tokens) - full(changed))[:, 5 + REACH + 1:].abs().max().item() > 1e-4


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_window_with_document_masking_equals_each_document_alone(backend, make_model):
    model = make_model(sliding_window=W, n_layers=L, attention_backend=backend)
    lengths = [3, 11, 6]
    docs = [torch.randint(0, 97, (n,), generator=torch.Generator().manual_seed(n)) for n in lengths]
    packed = torch.cat(docs)[None]
    doc_ids = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])[None]
    with torch.no_grad():
        out = model(packed, doc_ids=doc_ids)[0]
        start = 0
        for doc in docs:
            assert (out[start:start + len(doc)] - model(doc[None])[0]).abs().max().item() < 1e-5
            start += len(doc)
        changed = packed.clone()
        changed[0, 4] += 1  # second document, position 1 of it
        diff = (model(changed, doc_ids=doc_ids)[0] - out).abs().amax(-1)
    assert diff[:4].max().item() == 0 and diff[4].item() > 1e-3
    assert diff[4 + REACH + 1:].max().item() == 0


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_kv_cache_decoding_with_a_window_equals_the_full_forward(backend, make_model):
    model = make_model(sliding_window=W, n_layers=L, attention_backend=backend)
    tokens = _tokens(1)
    cache = KVCache.for_model(model.cfg, batch_size=2, max_len=T)
    with torch.no_grad():
        full = model(tokens)
        steps = [model(tokens[:, :7], kv_cache=cache)]  # a prompt longer than the window
        steps += [model(tokens[:, t:t + 1], kv_cache=cache) for t in range(7, 12)]
        steps.append(model(tokens[:, 12:], kv_cache=cache))  # a chunk of several tokens
    assert (torch.cat(steps, dim=1) - full).abs().max().item() < 1e-5


def test_a_window_as_long_as_the_sequence_changes_nothing(make_model):
    tokens = _tokens(2)
    with torch.no_grad():
        assert torch.equal(make_model(sliding_window=T)(tokens), make_model()(tokens))


def test_attention_mask_paths_agree_on_the_window():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 12, 4, 8, generator=g) for _ in range(3))
    k, v = k[:, :, :2], v[:, :, :2]
    doc_ids = torch.tensor([[0] * 12, [0] * 5 + [1] * 7])
    ref = attention(q, k, v, backend="eager", doc_ids=doc_ids, window=3)
    for layout in (build_layout(doc_ids, "sdpa", use_flex=False, window=3), build_layout(doc_ids, "sdpa", use_flex=True, window=3)):
        assert (attention(q, k, v, backend="sdpa", layout=layout, window=3) - ref).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="layout was built for window 3, attention asked for None"):
        attention(q, k, v, backend="sdpa", layout=build_layout(doc_ids, "sdpa", use_flex=False, window=3))


def test_default_model_has_no_new_tensors_and_options_add_exactly_theirs(make_model):
    plain = set(make_model().state_dict())
    assert not any("bias" in k or "q_norm" in k or "k_norm" in k for k in plain)
    rich = make_model(qkv_bias=True, qk_norm=True, head_dim=24)
    extra = set(rich.state_dict()) - plain
    assert extra == {f"layers.{i}.attention.{n}" for i in range(2)
                     for n in ("wq.bias", "wk.bias", "wv.bias", "q_norm.weight", "k_norm.weight")}
    assert rich.layers[0].attention.wq.weight.shape == (4 * 24, 64)
    assert rich.layers[0].attention.wo.weight.shape == (64, 4 * 24)
    assert rich.layers[0].attention.q_norm.weight.shape == (24,)


@pytest.mark.parametrize("over", [{}, {"qkv_bias": True}, {"qk_norm": True, "head_dim": 24},
                                  {"tie_embeddings": True, "qkv_bias": True, "qk_norm": True}])
def test_num_params_counts_every_option(make_model, over):
    model = make_model(**over)
    assert num_params(model.cfg) == sum(p.numel() for p in model.parameters())


def test_flops_use_head_dim_and_the_window(make_config):
    base = make_config()
    wide = make_config(head_dim=32)
    # attention term: 12 * L * H * Q * T; matmul params grow with the wider q/k/v/o projections
    extra_params = 2 * (4 * 16 * 64 * 2 + 2 * 16 * 64 * 2)  # per layer: wq, wo (+16 each) and wk, wv
    assert flops_per_token(wide, 64) - flops_per_token(base, 64) == 6 * extra_params + 12 * 2 * 4 * 16 * 64
    windowed = make_config(sliding_window=16)
    assert flops_per_token(base, 64) - flops_per_token(windowed, 64) == 12 * 2 * 4 * 16 * (64 - 16)
    assert flops_per_token(windowed, 8) == flops_per_token(base, 8)


def test_head_dim_and_rope_scaling_are_validated():
    with pytest.raises(ConfigError, match="head_dim: 15 must be even for RoPE"):
        build(ModelConfig, {"dim": 64, "n_heads": 4, "head_dim": 15})
    assert build(ModelConfig, {"dim": 60, "n_heads": 8, "head_dim": 16}).head_size == 16  # 8 does not divide 60
    with pytest.raises(ConfigError, match="rope_scaling.type: 'yarn' is not one of 'linear', 'llama3'"):
        build(ModelConfig, {"rope_scaling": {"type": "yarn"}})
    with pytest.raises(ConfigError, match="rope_scaling.high_freq_factor: 1.0 must exceed low_freq_factor 2.0"):
        build(ModelConfig, {"rope_scaling": {"low_freq_factor": 2.0, "high_freq_factor": 1.0}})


def test_model_yaml_round_trips_the_options_and_old_files_load_with_defaults(tmp_path, make_config):
    cfg = make_config(head_dim=32, qkv_bias=True, qk_norm=True, sliding_window=8,
                      rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 32))
    write_model_config(tmp_path, cfg)
    back = read_model_config(tmp_path)
    assert back == cfg and back.architecture_diff(cfg) == []
    assert ModelConfig(**cfg.architecture_dict()) == cfg  # plain data in, RopeScaling out
    old = {k: v for k, v in make_config().architecture_dict().items()
           if k not in ("head_dim", "qkv_bias", "qk_norm", "sliding_window", "rope_scaling")}
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(old))
    assert read_model_config(tmp_path) == make_config()


@pytest.mark.parametrize("scaling", [
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64},
    {"rope_type": "linear", "factor": 4.0},
])
def test_scaled_inverse_frequencies_equal_transformers_bit_for_bit(scaling):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_cfg = transformers.LlamaConfig(hidden_size=256, num_attention_heads=4, max_position_embeddings=512,
                                      rope_parameters={**scaling, "rope_theta": 500000.0})
    theirs, _ = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](hf_cfg, "cpu")
    ours = inverse_frequencies(64, 500000.0, RopeScaling(type=scaling["rope_type"], **{
        k: v for k, v in scaling.items() if k != "rope_type"}))
    assert torch.equal(ours, theirs.float())
    assert not torch.equal(ours, inverse_frequencies(64, 500000.0))
