"""The Transformer: packing with document masking, KV-cache decoding, init, checkpointing."""

from __future__ import annotations

import math

import pytest
import torch

from llmtrain.model.flops import num_params
from llmtrain.model.kv_cache import KVCache
from llmtrain.model.transformer import Transformer


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_packed_documents_equal_each_document_alone(backend, make_model):
    model = make_model(attention_backend=backend)
    lengths = [5, 9, 2, 8]
    docs = [torch.randint(0, 97, (n,), generator=torch.Generator().manual_seed(n)) for n in lengths]
    packed = torch.cat(docs)[None]
    doc_ids = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])[None]
    with torch.no_grad():
        out = model(packed, doc_ids=doc_ids)[0]
        start = 0
        for doc in docs:
            alone = model(doc[None])[0]
            assert (out[start:start + len(doc)] - alone).abs().max().item() < 1e-5
            start += len(doc)


def test_without_doc_ids_documents_do_interact(make_model):
    model = make_model()
    tokens = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        joint = model(tokens)
        split = model(tokens, doc_ids=torch.tensor([[0] * 6 + [1] * 6]))
    assert torch.allclose(joint[:, :6], split[:, :6], atol=1e-6)
    assert not torch.allclose(joint[:, 6:], split[:, 6:], atol=1e-3)


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_kv_cache_decoding_equals_full_forward(n_kv_heads, make_model):
    model = make_model(n_kv_heads=n_kv_heads)
    tokens = torch.randint(0, 97, (2, 14), generator=torch.Generator().manual_seed(1))
    cache = KVCache.for_model(model.cfg, batch_size=2, max_len=16)
    with torch.no_grad():
        full = model(tokens)
        steps = [model(tokens[:, :6], kv_cache=cache)]
        for t in range(6, 14):
            steps.append(model(tokens[:, t:t + 1], kv_cache=cache))
    assert cache.length == 14
    assert (torch.cat(steps, dim=1) - full).abs().max().item() < 1e-5


def test_kv_cache_overflow_and_doc_ids_are_refused(make_model):
    model = make_model()
    cache = KVCache.for_model(model.cfg, batch_size=1, max_len=4)
    with torch.no_grad(), pytest.raises(ValueError, match="KV cache holds 4 positions; 6 needed"):
        model(torch.zeros(1, 6, dtype=torch.long), kv_cache=cache)
    with torch.no_grad(), pytest.raises(ValueError, match="doc_ids and kv_cache cannot be combined"):
        model(torch.zeros(1, 3, dtype=torch.long), doc_ids=torch.zeros(1, 3, dtype=torch.long), kv_cache=cache)


def test_return_hidden_gives_final_normed_states(make_model):
    model = make_model(tie_embeddings=True)
    tokens = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        hidden = model(tokens, return_hidden=True)
        logits = model(tokens)
    assert hidden.shape == (2, 7, 64)
    assert torch.allclose(hidden @ model.output.weight.T, logits, atol=1e-6)


def test_init_is_seeded_scaled_and_counted(make_config):
    cfg = make_config(n_layers=8, dim=128, vocab_size=1000)
    torch.manual_seed(3)
    a = Transformer(cfg)
    torch.manual_seed(3)
    b = Transformer(cfg)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert sum(p.numel() for p in a.parameters()) == num_params(cfg)
    assert abs(a.layers[0].attention.wq.weight.std().item() - 0.02) < 0.001
    assert abs(a.layers[0].feed_forward.w2.weight.std().item() - 0.02 / math.sqrt(16)) < 0.0003
    assert torch.equal(a.norm.weight, torch.ones(128))
    assert not any(name.endswith("bias") for name, _ in a.named_parameters())


def test_tied_embeddings_share_one_tensor(make_config):
    model = Transformer(make_config(tie_embeddings=True))
    assert model.output.weight is model.tok_embeddings.weight
    assert sum(p.numel() for p in model.parameters()) == num_params(model.cfg)


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_activation_checkpointing_keeps_gradients(mode, make_model, monkeypatch):
    import llmtrain.model.transformer as tr

    calls = []
    real = tr.checkpoint
    monkeypatch.setattr(tr, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    tokens = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(4))
    doc_ids = torch.tensor([[0] * 4 + [1] * 6, [0] * 10])
    grads = []
    for ckpt in ("none", mode):
        model = make_model(seed=5, n_layers=3, activation_checkpointing=ckpt).train()
        model(tokens, doc_ids=doc_ids).float().logsumexp(-1).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for g0, g1 in zip(*grads, strict=True):
        assert torch.allclose(g0, g1, atol=1e-6)
    assert len(calls) == {"full": 3, "selective": 2}[mode]  # selective: blocks 0 and 2 of 3


def test_invalid_config_is_refused(make_config):
    with pytest.raises(ValueError, match="n_kv_heads: 3 must be >= 1 and divide n_heads 4"):
        Transformer(make_config(n_kv_heads=3))


def test_bf16_forward_on_cpu_runs_in_bf16(make_model):
    model = make_model().to(torch.bfloat16)
    out = model(torch.randint(0, 97, (1, 8)))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
