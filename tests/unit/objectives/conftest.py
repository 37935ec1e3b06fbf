"""A tiny model saved as an llmtrain model directory with a real SentencePiece tokenizer beside it."""

from pathlib import Path

import pytest
import torch

from llmtrain.model.config import ModelConfig
from llmtrain.model.transformer import Transformer
from llmtrain.modelio.model_dir import save_model_dir

TINY = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16, max_seq_len=64)
WORDS = ["the", "a", "film", "movie", "good", "bad", "plot", "actor", "scene", "story", "dull", "bright", "slow", "fast", "warm", "cold"]


@pytest.fixture
def tiny_model():
    def make(vocab_size: int = 320, seed: int = 0) -> Transformer:
        torch.manual_seed(seed)
        return Transformer(ModelConfig(vocab_size=vocab_size, **TINY)).eval()
    return make


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """Weights of a 320-token tiny model + a 320-piece tokenizer trained on generated sentences."""
    from data_prep.tokenizer import train_tokenizer

    texts = [" ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 9)) for i in range(400)]
    tok_dir = tmp_path_factory.mktemp("tok")
    train_tokenizer(texts, tok_dir, vocab_size=320, threads=1)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=320, **TINY))
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("rope.")}
    out = tmp_path_factory.mktemp("model")
    return save_model_dir(out, model.cfg, sd, tokenizer_files=sorted(p for p in tok_dir.iterdir() if p.is_file()))
