"""GPU checks: flash_attn vs sdpa parity (bf16, with and without packed documents), and an sdpa
bf16 forward/backward of the whole model. Skipped without CUDA (and flash-attn for the first)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from llmtrain.model.attention import attention, resolve_backend
from llmtrain.model.config import ModelConfig
from llmtrain.model.runtime import ModelRuntime, apply_runtime
from llmtrain.model.transformer import Transformer

CUDA = torch.cuda.is_available()
FLASH = CUDA and importlib.util.find_spec("flash_attn") is not None

pytestmark = pytest.mark.gpu


def _qkv(hkv: int, T: int = 256, B: int = 2, hq: int = 8, D: int = 64):
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = lambda h: (B, T, h, D)  # noqa: E731
    return [torch.randn(shape(h), generator=g, device="cuda", dtype=torch.bfloat16) for h in (hq, hkv, hkv)]


def _doc_ids(T: int = 256) -> torch.Tensor:
    lengths = [[37, 100, 119], [256]]
    rows = [torch.cat([torch.full((n,), i) for i, n in enumerate(row)]) for row in lengths]
    return torch.stack(rows).cuda()


@pytest.mark.skipif(not FLASH, reason="needs CUDA and the flash-attn package")
@pytest.mark.parametrize("hkv", [8, 2])
@pytest.mark.parametrize("docs", [False, True])
def test_flash_attn_matches_sdpa(hkv, docs):
    q, k, v = _qkv(hkv)
    doc_ids = _doc_ids() if docs else None
    ref = attention(q.float(), k.float(), v.float(), backend="sdpa", doc_ids=doc_ids)
    flash = attention(q, k, v, backend="flash_attn", doc_ids=doc_ids).float()
    sdpa = attention(q, k, v, backend="sdpa", doc_ids=doc_ids).float()
    # bf16 kernels differ from the fp32 reference by rounding; flash must be no worse than sdpa.
    assert (flash - ref).abs().max().item() < max(2e-2, 2 * (sdpa - ref).abs().max().item())
    assert resolve_backend("auto", "cuda", torch.bfloat16) == "flash_attn"


@pytest.mark.skipif(not FLASH, reason="needs CUDA and the flash-attn package")
def test_flash_attn_kv_cache_decode_matches_full_forward():
    from llmtrain.model.kv_cache import KVCache

    cfg = ModelConfig(vocab_size=512, dim=256, n_layers=2, n_heads=8, n_kv_heads=2, max_seq_len=64)
    torch.manual_seed(0)
    model = apply_runtime(Transformer(cfg), ModelRuntime(attention_backend="flash_attn"))
    model = model.cuda().to(torch.bfloat16).eval()
    tokens = torch.randint(0, 512, (2, 20), device="cuda")
    cache = KVCache.for_model(cfg, 2, 32, dtype=torch.bfloat16, device="cuda")
    with torch.no_grad():
        full = model(tokens).float()
        steps = [model(tokens[:, :12], kv_cache=cache)] + [model(tokens[:, t:t + 1], kv_cache=cache)
                                                            for t in range(12, 20)]
    assert (torch.cat(steps, 1).float() - full).abs().max().item() < 5e-2


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("ckpt", ["none", "full"])
def test_sdpa_bf16_forward_backward(ckpt):
    cfg = ModelConfig(vocab_size=1024, dim=256, n_layers=4, n_heads=8, n_kv_heads=4, max_seq_len=256)
    torch.manual_seed(0)
    model = apply_runtime(Transformer(cfg), ModelRuntime(attention_backend="sdpa", activation_checkpointing=ckpt))
    model = model.cuda().to(torch.bfloat16).train()
    tokens = torch.randint(0, 1024, (4, 256), device="cuda")
    doc_ids = torch.cat([torch.zeros(4, 100), torch.ones(4, 156)], dim=1).long().cuda()
    logits = model(tokens[:, :-1], doc_ids=doc_ids[:, :-1])
    assert logits.dtype == torch.bfloat16
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    assert abs(loss.item() - torch.log(torch.tensor(1024.0)).item()) < 0.5  # near uniform at init
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g.float()).all() for g in grads)
