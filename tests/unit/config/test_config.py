"""Config loading and validation: every problem reported at once, with the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmtrain.config import (
    ConfigError,
    EvalRunConfig,
    FinetuneRunConfig,
    PretrainRunConfig,
    RunConfig,
    build,
    load_run_config,
    read_yaml,
    validate_for_world,
)
from llmtrain.config.base import describe
from llmtrain.config.schema import ModelSection

ROOT = Path(__file__).resolve().parents[3]


def test_unknown_key_names_closest_valid_key():
    with pytest.raises(ConfigError) as e:
        load_run_config(None, ["train.max_step=10"])
    assert "train.max_step: unknown key (did you mean 'max_steps'?)" in str(e.value)


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError) as e:
        load_run_config(None, ["optim.lr=fast", "train.micro_batch_size=2.5"])
    msg = str(e.value)
    assert "optim.lr: expected a number, got str 'fast'" in msg
    assert "train.micro_batch_size: expected an integer, got float 2.5" in msg
    assert "2 problem(s)" in msg


def test_inconsistent_pairs_are_reported_with_the_fix():
    with pytest.raises(ConfigError) as e:
        load_run_config(None, ["model.dim=100", "model.n_heads=3", "train.global_batch_size=10",
                               "train.micro_batch_size=4", "train.seq_len=4096", "model.max_seq_len=1024"])
    msg = str(e.value)
    assert "model.n_heads: 3 does not divide dim 100" in msg
    assert "train.seq_len: 4096 is above model.max_seq_len 1024" in msg


def test_all_problems_collected_across_sections():
    with pytest.raises(ConfigError) as e:
        load_run_config(None, ["model.n_kv_heads=3", "train.zero_stage=4", "model.attention_backend=flash",
                               "optim.min_lr=1", "train.offload_params=true", "model.vocab_size=0"])
    msg = str(e.value)
    for expected in ("model.n_kv_heads: 3 must be >= 1 and divide n_heads 8",
                     "train.zero_stage: 4 is not one of 0, 1, 2, 3",
                     "model.attention_backend: 'flash' is not one of 'auto', 'flash_attn', 'sdpa', 'eager'",
                     "optim.min_lr: 1.0 is above lr 0.0003",
                     "train.offload_params: parameter offload needs zero_stage 3",
                     "model.vocab_size: must be >= 1, got 0"):
        assert expected in msg
    assert "6 problem(s)" in msg


def test_overrides_parse_yaml_values_and_base_includes(tmp_path):
    (tmp_path / "m.yaml").write_text("dim: 64\nn_heads: 4\nn_layers: 2\n")
    (tmp_path / "run.yaml").write_text("model:\n  base: m.yaml\n  n_layers: 3\ntrain:\n  max_steps: 5\n")
    cfg = load_run_config(tmp_path / "run.yaml", ["optim.lr=1e-3", "train.zero_stage=3", "eval.prompts=[a, b]"],
                          root=FinetuneRunConfig)
    assert (cfg.model.dim, cfg.model.n_layers, cfg.train.max_steps) == (64, 3, 5)
    assert cfg.optim.lr == 1e-3 and cfg.train.zero_stage == 3 and cfg.eval.prompts == ["a", "b"]


def test_missing_file_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; shipped recipes are under configs/"):
        load_run_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_run_config(None, ["train.max_steps"])


def test_include_cycle_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        read_yaml(tmp_path / "a.yaml")


def test_every_field_is_documented():
    from llmtrain.config import schema

    for cls in (schema.ModelSection, schema.TrainConfig, schema.OptimConfig, schema.CheckpointConfig,
                schema.LoggingConfig, schema.FinetuneConfig, schema.LoraConfig, schema.EvalConfig,
                PretrainRunConfig, FinetuneRunConfig, EvalRunConfig):
        for name, _tp, _default, help_text in describe(cls):
            assert help_text, f"{cls.__name__}.{name} has no help text"


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")
                                        if p.parent.name in ("pretrain", "finetune")))
def test_shipped_run_configs_validate(path):
    root = FinetuneRunConfig if "/finetune/" in path else PretrainRunConfig
    cfg = load_run_config(ROOT / path, root=root)
    assert isinstance(cfg, RunConfig) and isinstance(cfg, root)
    assert cfg.train.seq_len <= cfg.model.max_seq_len


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "configs" / "model").glob("*.yaml")))
def test_shipped_model_presets_validate(path):
    cfg = build(ModelSection, yaml.safe_load((ROOT / "configs" / "model" / path).read_text()))
    assert cfg.dim % cfg.n_heads == 0


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "configs" / "data").glob("*.yaml")))
def test_shipped_data_configs_validate(path):
    from llmtrain.config.data import load_data_config

    cfg = load_data_config(ROOT / "configs" / "data" / path)
    assert cfg.sources and all(s.weight >= 0 for s in cfg.sources)


def test_eval_task_files_are_yaml_mappings():
    for p in (ROOT / "configs" / "eval").glob("*.yaml"):
        data = yaml.safe_load(p.read_text())
        assert isinstance(data, dict) and "task" in data, p


def test_batch_arithmetic_is_checked_once_with_the_world_size():
    cfg = load_run_config(None, ["train.global_batch_size=10", "train.micro_batch_size=4"])  # no world size yet
    with pytest.raises(ConfigError, match=r"train.global_batch_size: 10 is not divisible by micro_batch_size x "
                                          r"data-parallel ranks = 4 x 1 = 4; use train.global_batch_size=8 or 12"):
        validate_for_world(cfg, 1)
    cfg = load_run_config(None, ["train.global_batch_size=12", "train.micro_batch_size=2"])
    validate_for_world(cfg, 2)
    with pytest.raises(ConfigError, match="= 2 x 4 = 8; use train.global_batch_size=8 or 16"):
        validate_for_world(cfg, 4)


def test_each_command_reads_only_its_sections():
    with pytest.raises(ConfigError, match=r"finetune: unknown key"):
        load_run_config(None, ["finetune.task=sft"])  # llmtrain train has no finetune section
    with pytest.raises(ConfigError, match=r"data: unknown key"):
        load_run_config(None, ["data.config=x.yaml"], root=FinetuneRunConfig)
    from llmtrain.config.roots import keep_sections

    saved = {"model": {"dim": 8}, "optim": {"lr": 1}, "tokenizer": None, "data": {"config": "d.yaml"},
             "eval": {"prompts": ["a"]}, "evaluation": {}}
    assert keep_sections(saved, EvalRunConfig) == {"data": {"config": "d.yaml"}, "eval": {"prompts": ["a"]},
                                                   "evaluation": {}}  # a misspelt section stays to be reported
