"""HF interop without transformers models: config translation, refusals, name maps, sharded files."""

from __future__ import annotations

import json

import pytest
import torch

from llmtrain.errors import CheckpointError
from llmtrain.model.config import RopeScaling
from llmtrain.modelio.hf import (
    export_hf,
    from_hf_state_dict,
    hf_config,
    import_hf,
    model_config_from_hf,
    read_source_config,
    source_config_files,
    to_hf_state_dict,
)
from llmtrain.modelio.layout import HF_CONFIG_FILE
from llmtrain.modelio.model_dir import save_model_dir


@pytest.fixture
def llama_json(make_config):
    return hf_config(make_config(), torch.float32)


def test_config_round_trip(make_config, llama_json):
    cfg = make_config(rope_theta=500000.0, tie_embeddings=True)
    back = model_config_from_hf(hf_config(cfg, torch.float32), name=cfg.name)
    for f in ("vocab_size", "dim", "n_layers", "n_heads", "kv_heads", "hidden_dim", "max_seq_len",
              "rope_theta", "norm_eps", "tie_embeddings", "init_std"):
        assert getattr(back, f) == getattr(cfg, f), f


@pytest.mark.parametrize("patch, message", [
    ({"attention_bias": True}, "config.json attention_bias=True: Llama's attention bias includes o_proj"),
    ({"mlp_bias": True}, "config.json mlp_bias=True: the MLP has no bias terms"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
     "config.json rope_scaling.rope_type='yarn': only default, linear and llama3 RoPE are implemented"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}},
     "config.json rope_parameters.rope_type='dynamic': only default, linear and llama3"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
     "llama3 RoPE scaling needs low_freq_factor, high_freq_factor"),
    ({"hidden_act": "gelu"}, "config.json hidden_act='gelu': the MLP is SwiGLU"),
    ({"model_type": "gpt2"}, "config.json model_type='gpt2': the native families are llama, mistral, qwen2, qwen3"),
    ({"partial_rotary_factor": 0.5}, "config.json partial_rotary_factor=0.5: RoPE rotates the whole head"),
    ({"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1},
     "config.json max_window_layers=1: with use_sliding_window it mixes sliding-window (8) and full-attention"),
    ({"model_type": "qwen2", "layer_types": ["full_attention", "chunked_attention"]},
     "config.json layer_types=['chunked_attention']"),
    ({"model_type": "qwen3", "attention_bias": True}, "config.json attention_bias=True: Qwen3's attention bias"),
    ({"model_type": "mistral", "sliding_window": 0}, "config.json sliding_window=0: a sliding window is a positive"),
])
def test_import_refuses_unrepresentable_architectures(llama_json, patch, message):
    with pytest.raises(CheckpointError) as e:
        model_config_from_hf({**llama_json, **patch})
    assert message in str(e.value)
    assert "pick a checkpoint of that architecture" in str(e.value)


@pytest.mark.parametrize("patch, want", [
    ({"model_type": "mistral", "sliding_window": None}, {"sliding_window": None}),
    ({"model_type": "mistral", "sliding_window": 4096}, {"sliding_window": 4096}),
    # Qwen2 configs carry a window that transformers ignores unless use_sliding_window is true
    ({"model_type": "qwen2", "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 1},
     {"sliding_window": None, "qkv_bias": True}),
    ({"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 0},
     {"sliding_window": 8}),
    ({"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 2},
     {"sliding_window": None}),
    ({"model_type": "qwen3", "head_dim": 32}, {"head_dim": 32, "head_size": 32, "qk_norm": True}),
    ({"model_type": "qwen3", "head_dim": 16}, {"head_dim": None, "head_size": 16}),
    ({"head_dim": 32}, {"head_dim": 32}),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, {"rope_scaling": RopeScaling("linear", 2.0)}),
    ({"rope_parameters": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192, "rope_theta": 500000.0}},
     {"rope_theta": 500000.0, "rope_scaling": RopeScaling("llama3", 32.0, 1.0, 4.0, 8192)}),
])
def test_import_maps_family_features(llama_json, patch, want):
    cfg = model_config_from_hf({**llama_json, **patch})
    assert {k: getattr(cfg, k) for k in want} == want


@pytest.mark.parametrize("over, architecture", [
    ({}, "LlamaForCausalLM"), ({"tie_embeddings": True}, "LlamaForCausalLM"),
    ({"rope_scaling": RopeScaling("llama3", 8.0, 1.0, 4.0, 32)}, "LlamaForCausalLM"),
    ({"sliding_window": 16}, "MistralForCausalLM"), ({"qkv_bias": True}, "Qwen2ForCausalLM"),
    ({"qkv_bias": True, "sliding_window": 16}, "Qwen2ForCausalLM"),
    ({"qk_norm": True, "head_dim": 32}, "Qwen3ForCausalLM"),
])
def test_models_without_a_source_export_as_the_simplest_family_and_import_back(make_config, over, architecture):
    cfg = make_config(**over)
    config = hf_config(cfg, torch.float32)
    assert config["architectures"] == [architecture]
    back = model_config_from_hf(config, name=cfg.name)
    # HF stores the MLP width itself, not our rule for deriving it
    derived = ("multiple_of", "ffn_dim_multiplier", "ffn_hidden_dim")
    assert [d for d in back.architecture_diff(cfg) if not d.startswith(tuple(f"model.{k}:" for k in derived))] == []
    assert back.hidden_dim == cfg.hidden_dim


def test_export_keeps_the_source_family_and_its_other_fields(make_config, llama_json):
    source = {**llama_json, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "bos_token_id": 151643,
              "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 21, "transformers_version": "4.43.1"}
    cfg = model_config_from_hf(source)
    config = hf_config(cfg, torch.bfloat16, source=source)
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["torch_dtype"] == "bfloat16"
    assert (config["bos_token_id"], config["sliding_window"], config["max_window_layers"]) == (151643, 32768, 21)
    assert config["transformers_version"] == "4.43.1" and config["use_sliding_window"] is False
    # a plain Mistral (no window) stays a Mistral with its source, and would be a Llama without one
    mistral = {**llama_json, "model_type": "mistral", "sliding_window": None}
    assert hf_config(model_config_from_hf(mistral), None, source=mistral)["architectures"] == ["MistralForCausalLM"]


def test_export_refuses_a_source_family_that_cannot_compute_the_model(make_config, llama_json):
    with pytest.raises(CheckpointError, match=r"cannot export as LlamaForCausalLM: qk_norm: Llama has no q/k norms"):
        hf_config(make_config(qk_norm=True), torch.float32, source=llama_json)
    with pytest.raises(CheckpointError, match="cannot export as Qwen3ForCausalLM: qkv_bias"):
        hf_config(make_config(qk_norm=True, qkv_bias=True), torch.float32)


def test_source_config_is_written_read_and_absent_for_own_models(tmp_path, make_model, llama_json):
    model = make_model()
    save_model_dir(tmp_path / "own", model.cfg, model.state_dict())
    assert read_source_config(tmp_path / "own") is None
    save_model_dir(tmp_path / "imported", model.cfg, model.state_dict(), hf_config=llama_json)
    assert read_source_config(tmp_path / "imported") == llama_json
    assert source_config_files(llama_json) == {HF_CONFIG_FILE: json.dumps(llama_json, indent=2) + "\n"}
    (tmp_path / "imported" / HF_CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="hf_config.json must hold a JSON object"):
        read_source_config(tmp_path / "imported")


@pytest.mark.parametrize("tie, over", [(False, {}), (True, {}), (False, {"qkv_bias": True, "qk_norm": True})])
def test_name_maps_are_inverse(make_model, tie, over):
    model = make_model(tie_embeddings=tie, **over)
    sd = model.state_dict()
    hf = to_hf_state_dict(sd, model.cfg)
    assert ("lm_head.weight" in hf) is not tie
    assert "model.layers.1.mlp.down_proj.weight" in hf and "model.layers.0.input_layernorm.weight" in hf
    back = from_hf_state_dict(hf, model.cfg)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_bias_weights_and_missing_weights_are_refused(make_model):
    model = make_model()
    hf = to_hf_state_dict(model.state_dict(), model.cfg)
    with pytest.raises(CheckpointError, match=r"\['model.layers.0.self_attn.q_proj.bias'\] have no counterpart in "
                                              "the llmtrain model that config.json describes"):
        from_hf_state_dict({**hf, "model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}, model.cfg)
    with pytest.raises(CheckpointError, match="'model.layers.0.self_attn.o_proj.bias' has no counterpart"):
        from_hf_state_dict({**hf, "model.layers.0.self_attn.o_proj.bias": torch.zeros(64)}, model.cfg)
    del hf["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(CheckpointError, match=r"lacks 1 weight\(s\).*layers.1.feed_forward.w3.weight"):
        from_hf_state_dict(hf, model.cfg)


def test_sharded_export_imports_back(tmp_path, make_model):
    model = make_model()
    export_hf(model.state_dict(), model.cfg, tmp_path, max_shard_size="40KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2 and set(index["weight_map"].values()) == set(shards)
    assert not (tmp_path / "model.safetensors").exists()
    cfg, sd = import_hf(tmp_path)
    assert cfg.n_kv_heads == 2 and cfg.hidden_dim == model.cfg.hidden_dim
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())


def test_export_writes_configs_and_tokenizer(tmp_path, make_model):
    import sentencepiece as spm

    tok = tmp_path / "tok"
    tok.mkdir()
    lines = [f"the quick brown fox {i} jumps over the lazy dog" for i in range(200)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tok / "tokenizer"),
                                   vocab_size=40, minloglevel=2)
    model = make_model()
    out = export_hf(model.state_dict(), model.cfg, tmp_path / "hf", tokenizer_dir=tok, dtype=torch.bfloat16,
                    extra_config={"pad_token_id": 0})
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == 2
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 0)
    assert config["torch_dtype"] == "bfloat16"
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2
    assert {"tokenizer.model", "tokenizer.vocab"} <= {p.name for p in out.iterdir()}
    _, sd = import_hf(out)
    assert sd["norm.weight"].dtype == torch.bfloat16


def test_import_of_a_non_model_directory_names_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="has no config.json; pass a local Hugging Face model directory"):
        import_hf(tmp_path)


def test_pytorch_bin_weights_are_read_with_weights_only(tmp_path, make_model):
    model = make_model()
    export_hf(model.state_dict(), model.cfg, tmp_path)
    from safetensors.torch import load_file

    torch.save(load_file(str(tmp_path / "model.safetensors")), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    _, sd = import_hf(tmp_path)
    assert torch.equal(sd["layers.1.attention.wk.weight"], model.layers[1].attention.wk.weight)
