import pytest

from llmtrain.config.base import ConfigError, build
from llmtrain.config.data import DataConfig, load_data_config

TOK = {"path": "tok"}


def _problems(data):
    with pytest.raises(ConfigError) as e:
        build(DataConfig, data)
    return str(e.value)


def test_shipped_data_configs_load():
    starter = load_data_config("configs/data/starter.yaml")
    assert [s.name for s in starter.sources] == ["shakespeare", "python_stdlib", "wikipedia", "news"]
    assert starter.tokenizer.vocab_size == 8192 and starter.output_dir == "data/starter"
    gpt3 = load_data_config("configs/data/gpt3_table22.yaml")
    assert all(s.planning_only for s in gpt3.sources) and gpt3.sources[0].tokens == 410.49e9


def test_mixture_problems_are_reported_together():
    msg = _problems({"tokenizer": TOK, "sources": []})
    assert "the mixture is empty" in msg
    msg = _problems({"tokenizer": TOK, "sources": [{"name": "a", "path": "x", "weight": -1},
                                                   {"name": "b", "path": "y", "formt": "txt"}]})
    assert "sources[0].weight: must be >= 0, got -1" in msg
    assert "unknown key (did you mean 'format'?)" in msg
    msg = _problems({"tokenizer": TOK, "sources": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]})
    assert "duplicate names a" in msg
    msg = _problems({"tokenizer": TOK, "sources": [{"name": "a", "path": "x", "weight": 0}]})
    assert "weights sum to zero" in msg
    msg = _problems({"sources": [{"name": "a", "starter": "shakespear", "path": "x"}]})
    assert "did you mean 'shakespeare'" in msg and "starter and path are both given for source a" in msg
    assert "tokenizer: required" in _problems({"sources": [{"name": "a", "path": "x"}]})
