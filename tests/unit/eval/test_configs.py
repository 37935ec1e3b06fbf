from pathlib import Path

import pytest

from llmtrain.config.loader import load_run_config
from llmtrain.config.roots import FinetuneRunConfig

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", ["sentiment", "sft"])
def test_finetune_recipes_load(name):
    cfg = load_run_config(ROOT / "configs" / "finetune" / f"{name}.yaml", root=FinetuneRunConfig)
    assert cfg.model.name == "tiny" and cfg.model.dim == 128
    assert cfg.finetune.task == {"sentiment": "classification", "sft": "sft"}[name]
    assert cfg.train.seq_len <= cfg.model.max_seq_len
