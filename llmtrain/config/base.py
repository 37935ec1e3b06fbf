"""Typed config machinery: build dataclasses from YAML dicts and report every problem at once.

Every section of a run config is a dataclass whose fields carry a one-line ``help`` in their
metadata. :func:`build` turns a plain dict into such a dataclass, collecting unknown keys (with
the closest valid name), wrong types and out-of-range values into one :class:`ConfigError`.
Cross-field checks live in each dataclass's ``check()`` and are collected by the same pass.
Every number must be finite: NaN is refused everywhere (YAML's ``.nan``, ``--set x=nan``), infinity
unless the field says ``allow_inf=True``; a NaN learning rate or weight would otherwise train (or
plan) silently wrong.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message lists every problem found."""

    def __init__(self, problems: Iterable[str], source: str | None = None):
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        lines = [f"invalid configuration{where} ({len(self.problems)} problem(s)):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def field(default: Any = dataclasses.MISSING, *, help: str, choices: tuple | None = None,
          min: float | None = None, default_factory: Any = dataclasses.MISSING, gt: float | None = None,
          max: float | None = None, allow_inf: bool = False) -> Any:
    """A dataclass field with a help text and optional validation bounds (``allow_inf``: a float
    field that may be ``.inf``; NaN is never accepted)."""
    meta = {"help": help, "choices": choices, "min": min, "gt": gt, "max": max, "allow_inf": allow_inf}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def closest(name: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _finite(value: float, key: str, problems: list[str], allow_inf: bool) -> float:
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        problems.append(f"{key}: must be a finite number, got {value}")
    return value


def _coerce(value: Any, tp: Any, key: str, problems: list[str], allow_inf: bool = False) -> Any:
    """Check ``value`` against the annotation ``tp``; return the converted value."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        sections = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(sections) == 1:  # an optional section: report its own problems
            return _coerce(value, sections[0], key, problems)
        for a in args:
            if a is type(None):
                continue
            sub: list[str] = []
            out = _coerce(value, a, key, sub, allow_inf)
            if not sub:
                return out
            if any("finite number" in p for p in sub):  # the right type, a non-finite value: say that
                problems += sub
                return value
        problems.append(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping of {tp.__name__} fields, got {type(value).__name__}")
            return value
        return _build(tp, value, key, problems)
    if origin in (list, tuple):
        (item_tp, *_rest) = get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            problems.append(f"{key}: expected a list, got {type(value).__name__} {value!r}")
            return value
        items = [_coerce(v, item_tp, f"{key}[{i}]", problems, allow_inf) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {type(value).__name__}")
            return value
        (_key_tp, val_tp) = get_args(tp) or (Any, Any)
        if val_tp is Any:
            return value
        return {k: _coerce(v, val_tp, f"{key}.{k}", problems, allow_inf) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()
        ):
            problems.append(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
            return value
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:  # YAML reads 3e-4 as a string
                return _finite(float(value), key, problems, allow_inf)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{key}: expected a number, got {type(value).__name__} {value!r}")
            return value
        return _finite(float(value), key, problems, allow_inf)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    return value


def _build(cls: type[T], data: dict[str, Any], prefix: str, problems: list[str]) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    bad_values = 0  # cross-field checks are only meaningful when every value has the right type
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            problems.append(f"{key}: unknown key{closest(str(k), fields)}; valid keys: {', '.join(fields)}")
            continue
        f = fields[k]
        before = len(problems)
        val = _coerce(v, hints[k], key, problems, bool(f.metadata.get("allow_inf")))
        if not dataclasses.is_dataclass(hints[k]):  # a section's own problems do not block the parent's checks
            bad_values += len(problems) - before
        choices = f.metadata.get("choices")
        if choices and val is not None and val not in choices:
            problems.append(f"{key}: {val!r} is not one of {', '.join(map(repr, choices))}{closest(str(val), map(str, choices))}")
        lo, gt, hi = f.metadata.get("min"), f.metadata.get("gt"), f.metadata.get("max")
        if isinstance(val, (int, float)) and not isinstance(val, bool) and not math.isnan(val):
            if hi is not None and val > hi:
                problems.append(f"{key}: must be <= {hi}, got {val}")
            if lo is not None and val < lo:
                problems.append(f"{key}: must be >= {lo}, got {val}")
            if gt is not None and val <= gt:
                problems.append(f"{key}: must be > {gt}, got {val}")
        kwargs[k] = val
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{prefix + '.' if prefix else ''}{name}: required key is missing ({f.metadata.get('help', '')})")
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # missing fields already reported
        problems.append(f"{prefix or cls.__name__}: {e}")
        return None  # type: ignore[return-value]
    check = getattr(obj, "check", None)
    if check is not None and not bad_values:
        try:
            found = check()
        except (TypeError, ValueError, AttributeError, ZeroDivisionError):
            found = []  # a field has the wrong type; that problem is already reported
        problems += [f"{prefix + '.' if prefix else ''}{p}" for p in found]
    return obj


def build(cls: type[T], data: dict[str, Any] | None, *, prefix: str = "", source: str | None = None) -> T:
    """Build ``cls`` from ``data``; raise one ConfigError listing every problem."""
    problems: list[str] = []
    obj = _build(cls, data or {}, prefix, problems)
    if problems:
        raise ConfigError(problems, source)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (for YAML/JSON dumps)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) rows for documentation and ``--help`` texts."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            "<factory>" if f.default_factory is not dataclasses.MISSING else "<required>")
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return rows
