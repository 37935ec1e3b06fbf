"""RoPE helpers: per-document positions and agreement with HF's rotary embedding."""

from __future__ import annotations

import torch

from llmtrain.model.rope import RotaryEmbedding, positions_from_doc_ids


def test_positions_restart_at_each_document():
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 2], [7, 7, 7, 7, 7, 7]])
    assert positions_from_doc_ids(doc_ids).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]


def test_table_matches_hf_rotary_embedding_bitwise():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    hf_cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=32,
                         rope_theta=500000.0)
    pos = torch.arange(40)[None]
    hf_cos, hf_sin = LlamaRotaryEmbedding(hf_cfg)(torch.zeros(1, dtype=torch.float32), pos)
    cos, sin = RotaryEmbedding(16, 500000.0, max_seq_len=32)(pos, bound=40)
    assert torch.equal(cos, hf_cos) and torch.equal(sin, hf_sin)
