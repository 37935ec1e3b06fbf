"""HF interop without transformers models: config translation, refusals, name maps, sharded files."""

from __future__ import annotations

import json

import pytest
import torch

from llmtrain.errors import CheckpointError
from llmtrain.modelio.hf import (
    export_hf,
    from_hf_state_dict,
    hf_config,
    import_hf,
    model_config_from_hf,
    to_hf_state_dict,
)


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
    ({"attention_bias": True}, "config.json attention_bias=True: the model has no bias terms"),
    ({"mlp_bias": True}, "config.json mlp_bias=True: the model has no bias terms"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
     "config.json rope_scaling={'rope_type': 'llama3', 'factor': 8.0}: scaled RoPE"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}},
     "config.json rope_parameters.rope_type='linear': scaled RoPE is not implemented"),
    ({"hidden_act": "gelu"}, "config.json hidden_act='gelu': the MLP is SwiGLU"),
    ({"model_type": "gpt2"}, "config.json model_type='gpt2': only llama and mistral"),
    ({"model_type": "mistral", "sliding_window": 4096}, "config.json sliding_window=4096: sliding-window attention"),
    ({"head_dim": 32}, "config.json head_dim=32: head_dim must equal hidden_size/num_attention_heads = 16"),
    ({"partial_rotary_factor": 0.5}, "config.json partial_rotary_factor=0.5"),
])
def test_import_refuses_unrepresentable_architectures(llama_json, patch, message):
    with pytest.raises(CheckpointError) as e:
        model_config_from_hf({**llama_json, **patch})
    assert message in str(e.value)
    assert "pick a checkpoint of that architecture" in str(e.value)


def test_mistral_without_sliding_window_is_accepted(llama_json):
    cfg = model_config_from_hf({**llama_json, "model_type": "mistral", "sliding_window": None})
    assert cfg.dim == 64


@pytest.mark.parametrize("tie", [False, True])
def test_name_maps_are_inverse(make_model, tie):
    model = make_model(tie_embeddings=tie)
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
    with pytest.raises(CheckpointError, match="'model.layers.0.self_attn.q_proj.bias' has no counterpart"):
        from_hf_state_dict({**hf, "model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}, model.cfg)
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
