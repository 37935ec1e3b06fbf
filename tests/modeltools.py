"""Tiny model configs shared by the model and model-I/O tests (fp32, CPU, milliseconds per forward)."""

from __future__ import annotations

import torch

from llmtrain.model.config import ModelConfig
from llmtrain.model.runtime import RUNTIME_KEYS, ModelRuntime, apply_runtime
from llmtrain.model.transformer import Transformer


def tiny_config(**over) -> ModelConfig:
    base = dict(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, max_seq_len=64)
    base.update(over)
    return ModelConfig(**base)


def tiny_model(seed: int = 0, **over) -> Transformer:
    """A tiny model whose norm weights are perturbed too, so that a mixed-up norm is visible.

    Keys of :class:`ModelRuntime` in ``over`` (attention_backend, ...) are applied with apply_runtime.
    """
    runtime = ModelRuntime(**{k: over.pop(k) for k in RUNTIME_KEYS if k in over})
    torch.manual_seed(seed)
    model = apply_runtime(Transformer(tiny_config(**over)), runtime)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


# ---- fixtures shared by tests/unit/model and tests/unit/modelio (imported by their conftest.py)
import pytest  # noqa: E402


@pytest.fixture
def make_config():
    return tiny_config


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture(autouse=True)
def _few_threads():
    """The CI machine has 2 cores shared with other jobs; tiny models gain nothing from more threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
