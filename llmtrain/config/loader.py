"""YAML loading with ``base:`` includes and ``--set a.b=c`` overrides."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llmtrain.config.base import ConfigError, build, to_dict

T = TypeVar("T")
BASE_KEY = "base"


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _resolve_bases(node: Any, here: Path, seen: tuple[Path, ...]) -> Any:
    """Replace every mapping's ``base: FILE`` by FILE's content merged under the mapping."""
    if not isinstance(node, dict):
        return node
    node = {k: _resolve_bases(v, here, seen) for k, v in node.items()}
    if BASE_KEY in node and isinstance(node[BASE_KEY], str):
        ref = (here / node.pop(BASE_KEY)).resolve()
        if ref in seen:
            raise ConfigError([f"base: {ref} includes itself (cycle: {' -> '.join(map(str, seen + (ref,)))})"])
        node = _deep_merge(read_yaml(ref, seen + (ref,)), node)
    return node


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, resolving ``base:`` includes relative to the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError([f"config file {path} is a directory; pass a YAML file (shipped recipes are under configs/)"])
    if not path.is_file():
        raise ConfigError([f"config file {path} does not exist; shipped recipes are under configs/"])
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError([f"{path} is not valid YAML: {e}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path} must hold a mapping of sections, got {type(data).__name__}"])
    return _resolve_bases(data, path.parent, _seen + (path.resolve(),))


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (``3e-4``, ``true``, ``[a, b]``)."""
    data = copy.deepcopy(data)
    problems = []
    for item in overrides or []:
        if "=" not in item:
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.max_steps=100")
            continue
        key, raw = item.split("=", 1)
        if not key.strip() or "" in key.strip().split("."):
            problems.append(f"--set {item!r}: the key is empty or has an empty part; expected KEY=VALUE, "
                            f"e.g. --set train.max_steps=100")
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node: Any = data
        parts = key.strip().split(".")
        try:
            for p in parts[:-1]:
                if isinstance(node, list):  # `sources.0.weight=0.5` indexes into lists
                    node = node[int(p)]
                    continue
                if not isinstance(node.get(p), (dict, list)):
                    node[p] = {}
                node = node[p]
            if isinstance(node, list):
                node[int(parts[-1])] = value
            else:
                node[parts[-1]] = value
        except (ValueError, IndexError):
            problems.append(f"--set {item!r}: {key} indexes a list with {p!r}, which is not a valid position")
    if problems:
        raise ConfigError(problems)
    return data


def build_config(cls: type[T], data: dict[str, Any], source: str | None = None) -> T:
    return build(cls, data, source=source)


def load_run_config(path: str | Path | None, overrides: list[str] | None = None, root: type[T] | None = None) -> T:
    """Load, merge overrides into, and validate a command's config (default: ``llmtrain train``'s root);
    raises one ConfigError for all problems."""
    from llmtrain.config.roots import PretrainRunConfig

    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides)
    source = str(path) if path else None
    problems = deepspeed_problems(data.get("deepspeed"))
    try:
        cfg = build(root or PretrainRunConfig, data, source=source)
    except ConfigError as e:  # every problem in one message
        raise ConfigError(problems + e.problems, source) from None
    if problems:
        raise ConfigError(problems, source)
    return cfg


def deepspeed_problems(node: Any, key: str = "deepspeed") -> list[str]:
    """Values of the raw ``deepspeed:`` section DeepSpeed itself would choke on: ``auto`` (a Hugging Face
    Trainer placeholder DeepSpeed does not resolve) and non-finite numbers."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in deepspeed_problems(v, f"{key}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in deepspeed_problems(v, f"{key}[{i}]")]
    if isinstance(node, str) and node.strip().lower() == "auto":
        return [f"{key}: 'auto' is a Hugging Face Trainer placeholder that DeepSpeed does not resolve; remove the key "
                f"(llmtrain generates batch sizes, precision, clipping and the optimizer from train.* and optim.*) "
                f"or give a value"]
    if isinstance(node, float) and not math.isfinite(node):
        return [f"{key}: must be a finite number, got {node}"]
    return []


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
