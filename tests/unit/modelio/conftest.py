"""Fixtures of the model I/O tests: tiny configs and models (see tests/modeltools.py), few threads."""

from __future__ import annotations

import pytest
import torch
from modeltools import tiny_config, tiny_model


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
