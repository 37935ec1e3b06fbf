"""Scaled dot-product attention behind one interface: ``flash_attn``, ``sdpa`` or ``eager``.

All backends take ``q`` [B, T, Hq, D] and ``k``/``v`` [B, S, Hkv, D] (Hkv divides Hq: grouped-query
attention, kv head j serves query heads j*Hq/Hkv .. (j+1)*Hq/Hkv - 1 as in HF's ``repeat_kv``) and
return [B, T, Hq, D]. When S > T (decoding with a KV cache) the causal mask is aligned bottom-right:
query t sees keys 0 .. S-T+t.

``doc_ids`` [B, T] (non-decreasing per row) marks the document of each token of a packed sequence;
attention is then block-diagonal causal. flash_attn runs it as variable-length sequences
(``flash_attn_varlen_func`` with ``cu_seqlens``). sdpa on CUDA runs it through PyTorch's
``flex_attention`` (compiled once per process) with a block mask, which skips the blocks that cross
documents; a boolean mask would push SDPA off its flash/cuDNN kernels onto the slower
memory-efficient one. Elsewhere (CPU, eager, torch without flex) an equivalent boolean mask is used.
Set ``LLMTRAIN_FLEX_ATTENTION=0`` to turn the flex path off.

``window`` W (sliding-window attention, Mistral) restricts query t further to keys s with t - s < W
(itself and the W-1 before it; with a KV cache t is the query's absolute position), as transformers'
sliding-window mask does. Every path applies it: the boolean mask, the flex block mask (which also
skips the blocks left of the window) and flash-attn's ``window_size=(W-1, 0)``, with or without
document masking.

flash_attn is imported only when that backend is used, so this module loads anywhere.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

BACKENDS = ("flash_attn", "sdpa", "eager")
_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


@functools.lru_cache(maxsize=1)
def flash_attn_available() -> bool:
    """True when the flash-attn package imports (tried once, only when asked)."""
    try:
        import flash_attn  # noqa: F401
    except Exception:  # a broken build (ABI mismatch) is as good as absent
        return False
    return True


def resolve_backend(name: str, device: torch.device | str, dtype: torch.dtype | None = None) -> str:
    """Turn ``auto`` into a concrete backend for ``device`` (and compute ``dtype`` when known).

    ``auto`` = flash_attn on CUDA when installed and the dtype is fp16/bf16 (flash-attn has no fp32
    kernels), else sdpa. An explicit name is returned unchanged after validation.
    """
    if name != "auto":
        if name not in BACKENDS:
            raise ValueError(f"attention backend {name!r} is not one of auto, {', '.join(BACKENDS)}")
        return name
    half = dtype is None or dtype in (torch.float16, torch.bfloat16)
    if torch.device(device).type == "cuda" and half and flash_attn_available():
        return "flash_attn"
    return "sdpa"


@functools.lru_cache(maxsize=1)
def flex_attention_available() -> bool:
    """True when ``torch.nn.attention.flex_attention`` imports and LLMTRAIN_FLEX_ATTENTION is not 0."""
    if os.environ.get("LLMTRAIN_FLEX_ATTENTION", "1") == "0":
        return False
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except Exception:
        return False
    return True


@functools.cache
def _flex_kernel(device_type: str):
    """flex_attention compiled for CUDA (uncompiled it is a slow reference); plain elsewhere (tests)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if device_type == "cuda" else flex_attention


@dataclass
class DocumentLayout:
    """What a backend needs for document masking, built once per forward and shared by all layers."""

    doc_ids: torch.Tensor
    mask: torch.Tensor | None = None  # bool [B, 1, T, T] for sdpa/eager
    cu_seqlens: torch.Tensor | None = None  # int32 [n_docs + 1] over the flattened batch (flash_attn)
    max_seqlen: int = 0
    block_mask: Any = None  # flex_attention BlockMask (sdpa on CUDA), causal within documents
    window: int | None = None  # sliding window the mask / block mask / flash call applies


def doc_block_mask(doc_ids: torch.Tensor, window: int | None = None) -> Any:
    """flex_attention BlockMask: query t sees key s when s <= t, both are in the same document and
    (with ``window``) t - s < window."""
    from torch.nn.attention.flex_attention import create_block_mask

    def same_doc_causal(b, h, q_idx, kv_idx):
        return (doc_ids[b, q_idx] == doc_ids[b, kv_idx]) & (kv_idx <= q_idx)

    def same_doc_window(b, h, q_idx, kv_idx):
        return same_doc_causal(b, h, q_idx, kv_idx) & (q_idx - kv_idx < window)

    B, T = doc_ids.shape
    mask_mod = same_doc_causal if window is None else same_doc_window
    return create_block_mask(mask_mod, B, None, T, T, device=doc_ids.device)


def _flex_fits(doc_ids: torch.Tensor, head_dim: int | None) -> bool:
    # flex's Triton kernels want a power-of-two head dim of at least 16
    dim_ok = head_dim is None or (head_dim >= 16 and head_dim & (head_dim - 1) == 0)
    return doc_ids.is_cuda and dim_ok and flex_attention_available()


def build_layout(doc_ids: torch.Tensor, backend: str, *, use_flex: bool | None = None,
                 head_dim: int | None = None, window: int | None = None) -> DocumentLayout:
    """Precompute the mask (sdpa/eager), block mask (sdpa + flex) or varlen boundaries (flash_attn).

    ``use_flex`` None = flex_attention for sdpa on CUDA when available and ``head_dim`` suits it.
    ``window``: sliding-window size folded into the mask (see the module docstring).
    """
    if backend == "sdpa" and (use_flex if use_flex is not None else _flex_fits(doc_ids, head_dim)):
        return DocumentLayout(doc_ids, block_mask=doc_block_mask(doc_ids, window), window=window)
    if backend == "flash_attn":
        is_start = torch.ones_like(doc_ids, dtype=torch.bool)
        is_start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
        starts = torch.nonzero(is_start.flatten(), as_tuple=True)[0]
        total = torch.tensor([doc_ids.numel()], device=doc_ids.device)
        cu = torch.cat([starts, total]).to(torch.int32)
        return DocumentLayout(doc_ids, cu_seqlens=cu, max_seqlen=int((cu[1:] - cu[:-1]).max().item()),
                              window=window)
    T = doc_ids.shape[1]
    causal = _causal_mask(T, T, doc_ids.device, window)
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    return DocumentLayout(doc_ids, mask=(same_doc & causal)[:, None], window=window)


def _causal_mask(T: int, S: int, device: torch.device, window: int | None = None) -> torch.Tensor:
    """bool [T, S], aligned bottom-right: query t sees keys up to S - T + t (and, with a window,
    from S - T + t - window + 1)."""
    query_pos = torch.arange(T, device=device)[:, None] + (S - T)
    key_pos = torch.arange(S, device=device)[None, :]
    mask = key_pos <= query_pos
    if window is not None:
        mask &= query_pos - key_pos < window
    return mask


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, S, Hkv, D] -> [B, S, Hkv*n_rep, D], each kv head repeated for its group of query heads."""
    if n_rep == 1:
        return x
    B, S, H, D = x.shape
    return x[:, :, :, None, :].expand(B, S, H, n_rep, D).reshape(B, S, H * n_rep, D)


def _check_shapes(q: torch.Tensor, k: torch.Tensor, doc_ids: torch.Tensor | None) -> None:
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"{k.shape[2]} kv heads do not divide {q.shape[2]} query heads")
    if doc_ids is not None and q.shape[1] != k.shape[1]:
        raise ValueError("document masking needs queries and keys of the same length (no KV cache)")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str, causal: bool = True,
              doc_ids: torch.Tensor | None = None, layout: DocumentLayout | None = None,
              window: int | None = None) -> torch.Tensor:
    """Attention over [B, T, H, D] tensors with the chosen backend (see the module docstring).

    ``layout`` (from :func:`build_layout`, with the same ``window``) may be passed instead of
    ``doc_ids`` to skip rebuilding the mask in every layer. ``window`` needs ``causal``.
    """
    if window is not None and not causal:
        raise ValueError("a sliding window is defined for causal attention only")
    if layout is None and doc_ids is not None:
        layout = build_layout(doc_ids, backend, head_dim=q.shape[-1], window=window)
    if layout is not None and layout.window != window:
        raise ValueError(f"layout was built for window {layout.window}, attention asked for {window}")
    _check_shapes(q, k, layout.doc_ids if layout is not None else None)
    if backend == "flash_attn":
        return _flash(q, k, v, causal, layout, window)
    if backend == "sdpa":
        return _sdpa(q, k, v, causal, layout, window)
    if backend == "eager":
        return _eager(q, k, v, causal, layout, window)
    raise ValueError(f"attention backend {backend!r} is not one of {', '.join(BACKENDS)} (resolve 'auto' first)")


def _mask_for(q: torch.Tensor, k: torch.Tensor, causal: bool, layout: DocumentLayout | None,
              window: int | None = None) -> torch.Tensor | None:
    if layout is not None:
        if not causal:
            return (layout.doc_ids[:, :, None] == layout.doc_ids[:, None, :])[:, None]
        if layout.mask is not None:
            return layout.mask
        if layout.block_mask is not None:  # built for flex; a caller forced another kernel
            return build_layout(layout.doc_ids, "sdpa", use_flex=False, window=layout.window).mask
        raise ValueError("layout was built for flash_attn; build it for the backend in use")
    if causal:
        return _causal_mask(q.shape[1], k.shape[1], q.device, _effective(window, k.shape[1]))
    return None


def _effective(window: int | None, n_keys: int) -> int | None:
    """None when the window covers every key anyway (the plain causal kernels then apply)."""
    return window if window is not None and window < n_keys else None


def _flex(q, k, v, layout: DocumentLayout) -> torch.Tensor:
    """Document-masked causal attention through flex_attention (block mask from :func:`doc_block_mask`)."""
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    kernel = _flex_kernel(q.device.type)
    out = kernel(qt, kt, vt, block_mask=layout.block_mask, enable_gqa=q.shape[2] != k.shape[2])
    return out.transpose(1, 2)


def _sdpa(q, k, v, causal: bool, layout: DocumentLayout | None, window: int | None = None) -> torch.Tensor:
    if layout is not None and layout.block_mask is not None and causal and q.shape[1] == k.shape[1]:
        return _flex(q, k, v, layout)
    n_rep = q.shape[2] // k.shape[2]
    T, S = q.shape[1], k.shape[1]
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    kwargs = {}
    if n_rep > 1:
        if _SDPA_HAS_GQA:
            kwargs["enable_gqa"] = True
        else:
            kt, vt = _repeat_kv(k, n_rep).transpose(1, 2), _repeat_kv(v, n_rep).transpose(1, 2)
    if layout is None and causal and T == S and _effective(window, S) is None:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, **kwargs)
    else:
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=_mask_for(q, k, causal, layout, window), **kwargs)
    return out.transpose(1, 2)


def _eager(q, k, v, causal: bool, layout: DocumentLayout | None, window: int | None = None) -> torch.Tensor:
    """The reference: softmax(q k^T / sqrt(D) + mask) v, softmax in fp32."""
    n_rep = q.shape[2] // k.shape[2]
    qt = q.transpose(1, 2)
    kt = _repeat_kv(k, n_rep).transpose(1, 2)
    vt = _repeat_kv(v, n_rep).transpose(1, 2)
    scores = (qt @ kt.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    mask = _mask_for(q, k, causal, layout, window)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return (probs @ vt).transpose(1, 2)


def _flash(q, k, v, causal: bool, layout: DocumentLayout | None, window: int | None = None) -> torch.Tensor:
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"flash_attn needs fp16 or bf16 inputs, got {q.dtype}; use attention_backend sdpa "
                         "for fp32 or train in bf16")
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    # (-1, -1) is flash-attn's "no window"; (W-1, 0) keeps the query and the W-1 keys before it
    window_size = (window - 1, 0) if window is not None else (-1, -1)
    if layout is None:
        return flash_attn_func(q, k, v, causal=causal, window_size=window_size)
    if layout.cu_seqlens is None:
        raise ValueError("layout was built for sdpa/eager; build it with backend='flash_attn'")
    B, T, H, D = q.shape
    cu, n = layout.cu_seqlens, layout.max_seqlen
    out = flash_attn_varlen_func(q.reshape(B * T, H, D), k.reshape(B * T, k.shape[2], D),
                                 v.reshape(B * T, v.shape[2], D), cu, cu, n, n, causal=causal,
                                 window_size=window_size)
    return out.view(B, T, H, D)
