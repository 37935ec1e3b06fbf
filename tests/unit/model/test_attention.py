"""Attention backends agree with the eager reference; document layouts are built correctly."""

from __future__ import annotations

import sys

import pytest
import torch

from llmtrain.model.attention import attention, build_layout, resolve_backend


def _qkv(B=2, T=12, S=None, hq=4, hkv=4, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = S or T
    return (torch.randn(B, T, hq, D, generator=g), torch.randn(B, S, hkv, D, generator=g),
            torch.randn(B, S, hkv, D, generator=g))


DOC_IDS = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3, 3],
                        [5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6]])


@pytest.mark.parametrize("hkv", [4, 2, 1], ids=["mha", "gqa2", "mqa"])
@pytest.mark.parametrize("mode", ["causal", "full", "docs", "docs_full"])
def test_sdpa_matches_eager(hkv, mode):
    q, k, v = _qkv(hkv=hkv)
    causal = mode in ("causal", "docs")
    doc_ids = DOC_IDS if mode.startswith("docs") else None
    ref = attention(q, k, v, backend="eager", causal=causal, doc_ids=doc_ids)
    out = attention(q, k, v, backend="sdpa", causal=causal, doc_ids=doc_ids)
    assert out.shape == (2, 12, 4, 16)
    assert (out - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_causal_with_cached_prefix_is_bottom_right_aligned(backend):
    """Queries at the end of a longer key sequence (KV-cache decoding) see every earlier key."""
    q, k, v = _qkv(T=12, hkv=2)
    full = attention(q, k, v, backend=backend)
    tail = attention(q[:, 9:], k, v, backend=backend)
    assert (tail - full[:, 9:]).abs().max().item() < 1e-6


def test_document_mask_blocks_other_documents():
    """Changing a token of document 0 leaves every other document's output untouched."""
    q, k, v = _qkv(hkv=2)
    base = attention(q, k, v, backend="eager", doc_ids=DOC_IDS)
    k2, v2 = k.clone(), v.clone()
    k2[0, 1] += 10.0
    v2[0, 1] += 10.0
    out = attention(q, k2, v2, backend="eager", doc_ids=DOC_IDS)
    assert torch.equal(out[0, 3:], base[0, 3:])
    assert torch.equal(out[1], base[1])
    assert not torch.allclose(out[0, 1:3], base[0, 1:3])


def test_flash_layout_cu_seqlens():
    layout = build_layout(DOC_IDS, "flash_attn")
    assert layout.cu_seqlens.tolist() == [0, 3, 5, 10, 12, 19, 24]
    assert layout.cu_seqlens.dtype == torch.int32
    assert layout.max_seqlen == 7


def test_resolve_backend_on_cpu_and_errors():
    assert resolve_backend("auto", "cpu") == "sdpa"
    assert resolve_backend("eager", "cpu") == "eager"
    assert resolve_backend("flash_attn", "cpu") == "flash_attn"
    with pytest.raises(ValueError, match="'xformers' is not one of auto, flash_attn, sdpa, eager"):
        resolve_backend("xformers", "cpu")


def test_flash_attn_is_not_imported_by_cpu_use():
    q, k, v = _qkv()
    attention(q, k, v, backend=resolve_backend("auto", "cpu"))
    assert "flash_attn" not in sys.modules


def test_flash_attn_refuses_fp32_with_a_fix():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="flash_attn needs fp16 or bf16 inputs.*use attention_backend sdpa"):
        attention(q, k, v, backend="flash_attn")
