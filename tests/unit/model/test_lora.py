import torch
from torch import nn

from llmtrain.model.config import LoraConfig, ModelConfig
from llmtrain.model.lora import (
    LoRALinear,
    apply_lora,
    count_trainable,
    lora_state_dict,
    merge_lora,
    merge_lora_state,
)
from llmtrain.model.runtime import ModelRuntime, apply_runtime
from llmtrain.model.transformer import Transformer

CFG = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16, max_seq_len=32)


def _model() -> Transformer:
    torch.manual_seed(0)
    return apply_runtime(Transformer(CFG), ModelRuntime(attention_backend="eager")).eval()


def test_apply_lora_wraps_targets_and_freezes_base():
    model = _model()
    names = apply_lora(model, LoraConfig(enabled=True, rank=4, targets=["wq", "wv", "w2"]))
    assert names == ["layers.0.attention.wq", "layers.0.attention.wv", "layers.0.feed_forward.w2",
                     "layers.1.attention.wq", "layers.1.attention.wv", "layers.1.feed_forward.w2"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{m}" for n in names for m in "AB"}
    # rank 4: wq 32->32, wv 32->16 (2 kv heads x 8), w2 hidden->32; A is r x in, B is out x r
    per_layer = 4 * (32 + 32) + 4 * (32 + 16) + 4 * (CFG.hidden_dim + 32)
    assert count_trainable(model)[0] == 2 * per_layer
    assert len(lora_state_dict(model)) == 12


def test_zero_b_is_the_base_model():
    model = _model()
    tokens = torch.randint(0, 64, (2, 10))
    before = model(tokens)
    apply_lora(model, LoraConfig(enabled=True, rank=4))
    torch.testing.assert_close(model(tokens), before, rtol=0, atol=0)


def test_merged_equals_unmerged_fp32():
    model = _model()
    apply_lora(model, LoraConfig(enabled=True, rank=4, alpha=8.0, targets=["wq", "wk", "wv", "wo", "w1", "w2", "w3"]))
    torch.manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, LoRALinear):
            nn.init.normal_(mod.lora_B, std=0.05)
    tokens = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        unmerged = model(tokens)
        assert merge_lora(model) == 14
        merged = model(tokens)
    assert (unmerged - merged).abs().max().item() < 1e-5
    assert (unmerged - _model()(tokens)).abs().max().item() > 1e-3  # the adapters did change the model
    assert set(model.state_dict()) == set(_model().state_dict())
    assert not any(isinstance(m, LoRALinear) for m in model.modules())


def test_only_adapters_get_gradients():
    model = _model().train()
    apply_lora(model, LoraConfig(enabled=True, rank=2, targets=["wo"]))
    model(torch.randint(0, 64, (1, 8))).sum().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {"layers.0.attention.wo.lora_A", "layers.0.attention.wo.lora_B",
                     "layers.1.attention.wo.lora_A", "layers.1.attention.wo.lora_B"}


def test_unknown_target_is_an_error():
    import pytest
    with pytest.raises(ValueError, match="wz"):
        apply_lora(_model(), LoraConfig(enabled=True, targets=["wz"]))


def test_state_dict_merge_equals_module_merge_bitwise():
    """merge_lora_state (what checkpoints save) and merge_lora (in place) are one formula."""
    lora = LoraConfig(enabled=True, rank=4, alpha=8.0, targets=["wq", "wo", "w2"])
    model = _model()
    apply_lora(model, lora)
    torch.manual_seed(2)
    for mod in model.modules():
        if isinstance(mod, LoRALinear):
            nn.init.normal_(mod.lora_B, std=0.05)
    from_state = merge_lora_state(model.state_dict(), lora)
    merge_lora(model)
    in_place = model.state_dict()
    assert set(from_state) == set(in_place)
    for k, v in in_place.items():
        assert torch.equal(from_state[k], v), k
