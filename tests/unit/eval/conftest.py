from pathlib import Path

import pytest
import torch

from llmtrain.model.config import ModelConfig
from llmtrain.model.runtime import ModelRuntime, apply_runtime
from llmtrain.model.transformer import Transformer

TINY = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16, max_seq_len=96)


@pytest.fixture(scope="session")
def sp_tokenizer_dir(tmp_path_factory) -> Path:
    """A 512-piece SentencePiece tokenizer trained on a few hundred review snippets (about a second)."""
    from data_prep.tokenizer import train_tokenizer
    from llmtrain.data.finetune_sets import rotten_tomatoes

    texts = [r["text"] for r in rotten_tomatoes()["train"][:600]]
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(texts, out, vocab_size=512, threads=1)
    return out


@pytest.fixture
def tiny_model():
    def make(vocab_size: int = 512, seed: int = 0) -> Transformer:
        torch.manual_seed(seed)
        model = Transformer(ModelConfig(vocab_size=vocab_size, **TINY))
        return apply_runtime(model, ModelRuntime(attention_backend="eager")).eval()
    return make
