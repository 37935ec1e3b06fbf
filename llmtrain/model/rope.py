"""Rotary position embeddings in the Hugging Face Llama ("rotate_half") layout.

The two halves of each head are rotated as pairs ``(x[i], x[i + D/2])`` rather than the interleaved
``(x[2i], x[2i+1])`` of Meta's reference code. Using HF's layout makes export to
``LlamaForCausalLM`` a pure rename of weights, with no permutation of ``wq``/``wk``.

The cos/sin table is kept out of the state dict and out of ``module.to(dtype)`` on purpose: engines
such as DeepSpeed cast every floating buffer to bf16, which would make positions beyond a few
hundred collide. The table is built in fp32 per device and rotation happens in fp32.

``rope_scaling`` (:class:`~llmtrain.model.config.RopeScaling`) rescales the frequencies with the same
fp32 expressions as transformers' ``linear`` and ``llama3`` initialisers, so imported Llama 3.1/3.2
models give HF's angles bit for bit.
"""

from __future__ import annotations

import math

import torch

from llmtrain.model.config import RopeScaling


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> torch.Tensor:
    """``1 / theta^(2i/D)`` in fp32 (then scaled), computed on CPU with the exact expressions HF uses."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    if scaling is None:
        return inv_freq
    if scaling.type == "linear":
        return inv_freq / scaling.factor
    if scaling.type == "llama3":
        return _llama3(inv_freq, scaling)
    raise ValueError(f"rope_scaling.type {scaling.type!r} is not one of linear, llama3")


def _llama3(inv_freq: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    """Llama 3.1: long wavelengths divided by ``factor``, short ones kept, a smooth blend between."""
    old_context = s.original_max_position_embeddings
    low_freq_wavelen = old_context / s.low_freq_factor
    high_freq_wavelen = old_context / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(torch.nn.Module):
    """Holds no parameters or buffers; gives (cos, sin) for integer positions."""

    def __init__(self, head_dim: int, theta: float, max_seq_len: int, scaling: RopeScaling | None = None):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.scaling = scaling
        self.max_seq_len = max_seq_len
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _table(self, device: torch.device, needed: int) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._tables.get(device)
        if cached is not None and cached[0].shape[0] >= needed:
            return cached
        length = max(self.max_seq_len, needed)
        inv_freq = inverse_frequencies(self.head_dim, self.theta, self.scaling)
        # Elementwise products of fp32 values are exact-rounded, so gathering rows of this table gives
        # bit-for-bit the angles HF computes per call.
        freqs = torch.arange(length, dtype=torch.float)[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        table = (emb.cos().to(device), emb.sin().to(device))
        self._tables[device] = table
        return table

    def forward(self, positions: torch.Tensor, bound: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each fp32 [*positions.shape, head_dim]; ``bound`` > every position.

        The caller passes the bound it knows (sequence or cache length) so that no device->host
        sync is needed to size the table.
        """
        cos, sin = self._table(positions.device, bound)
        return cos[positions], sin[positions]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [B, T, H, D] by per-token angles ``cos``/``sin`` [B, T, D]; math in fp32."""
    xf = x.float()
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return ((xf * cos) + (rotate_half(xf) * sin)).to(x.dtype)


def positions_from_doc_ids(doc_ids: torch.Tensor) -> torch.Tensor:
    """Position of every token within its document; restarts at 0 where the id changes."""
    _, T = doc_ids.shape
    idx = torch.arange(T, device=doc_ids.device).expand_as(doc_ids)
    is_start = torch.ones_like(doc_ids, dtype=torch.bool)
    is_start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    start = torch.cummax(torch.where(is_start, idx, torch.zeros_like(idx)), dim=1).values
    return idx - start
