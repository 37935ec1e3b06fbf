"""Typed configuration: dataclass schema, YAML loading, overrides, one ConfigError for all problems."""

from llmtrain.config.base import ConfigError, build, to_dict
from llmtrain.config.loader import apply_overrides, dump_yaml, load_run_config, read_yaml
from llmtrain.config.schema import (
    CheckpointConfig,
    EvalConfig,
    FinetuneConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    TrainDataConfig,
)

__all__ = [
    "CheckpointConfig", "ConfigError", "EvalConfig", "FinetuneConfig", "LoggingConfig", "LoraConfig",
    "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig", "TrainDataConfig", "apply_overrides",
    "build", "dump_yaml", "load_run_config", "read_yaml", "to_dict",
]
