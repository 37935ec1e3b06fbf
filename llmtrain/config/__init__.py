"""Typed configuration: dataclass schema, YAML loading, overrides, one ConfigError for all problems.

The names below are resolved on first use: ``llmtrain.model`` builds its config on
``llmtrain.config.base`` while the run-config schema embeds the model's config, so importing this
package must not import the schema eagerly (that would be an import cycle).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "base", "build": "base", "to_dict": "base",
    "apply_overrides": "loader", "dump_yaml": "loader", "load_run_config": "loader", "read_yaml": "loader",
    "CheckpointConfig": "schema", "EvalConfig": "schema", "FinetuneConfig": "schema", "LoggingConfig": "schema",
    "LoraConfig": "schema", "ModelConfig": "schema", "ModelSection": "schema", "OptimConfig": "schema",
    "TrainConfig": "schema", "TrainDataConfig": "schema",
    "EvalRunConfig": "roots", "FinetuneRunConfig": "roots", "PretrainRunConfig": "roots", "RunConfig": "roots",
    "validate_for_world": "validate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"llmtrain.config.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'llmtrain.config' has no attribute {name!r}")
