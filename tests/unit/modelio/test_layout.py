"""model.yaml holds the architecture only; files written before that still read; config diffs."""

from __future__ import annotations

import pytest
import yaml

from llmtrain.config.base import ConfigError, build
from llmtrain.config.roots import PretrainRunConfig
from llmtrain.config.schema import ModelSection
from llmtrain.model.runtime import ModelRuntime
from llmtrain.modelio.layout import MODEL_YAML, read_model_config, tag_for, write_model_config


def test_model_yaml_holds_the_architecture_only(tmp_path, make_config):
    section = ModelSection.of(make_config(), ModelRuntime(attention_backend="eager", compile=True))
    write_model_config(tmp_path, section)
    saved = yaml.safe_load((tmp_path / MODEL_YAML).read_text())
    assert not {"attention_backend", "activation_checkpointing", "compile"} & set(saved)
    assert read_model_config(tmp_path) == make_config()


def test_legacy_runtime_keys_are_accepted_and_dropped(tmp_path, make_config):
    legacy = {**make_config().architecture_dict(), "attention_backend": "sdpa", "activation_checkpointing": "full",
              "compile": True}
    (tmp_path / MODEL_YAML).write_text(yaml.safe_dump(legacy))
    assert read_model_config(tmp_path) == make_config()


def test_other_unknown_keys_are_still_errors(tmp_path, make_config):
    (tmp_path / MODEL_YAML).write_text(yaml.safe_dump({**make_config().architecture_dict(), "dropout": 0.1}))
    with pytest.raises(ConfigError, match="model.dropout: unknown key"):
        read_model_config(tmp_path)


def test_architecture_diff_ignores_the_name_and_runtime(make_config):
    a = make_config(name="a")
    b = ModelSection.of(make_config(name="b", dim=128), ModelRuntime(compile=True))
    assert a.architecture_diff(b) == ["model.dim: checkpoint 64 vs config 128"]
    assert a.architecture_diff(b, labels=("a", "b")) == ["model.dim: a 64 vs b 128"]
    assert a.architecture_diff(ModelSection.of(a, ModelRuntime(activation_checkpointing="full"))) == []


def test_the_run_config_model_section_keeps_accepting_the_runtime_keys():
    cfg = build(PretrainRunConfig, {"model": {"dim": 64, "n_heads": 4, "attention_backend": "eager", "compile": True,
                                      "activation_checkpointing": "selective"}})
    assert cfg.model.runtime() == ModelRuntime("eager", "selective", True)
    assert cfg.model.architecture().dim == 64 and not hasattr(cfg.model.architecture(), "compile")
    with pytest.raises(ConfigError, match="model.attention_backend: 'flash2' is not one of"):
        build(PretrainRunConfig, {"model": {"attention_backend": "flash2"}})


def test_tags_sort_by_step():
    assert tag_for(7) == "step_000007" and tag_for(123) < tag_for(1000)
