"""`llmtrain config explain [section[.key]]`: the run config documented from its own schema.

Every key's type, default, accepted values and help text come from the dataclasses that parse the
config (llmtrain/config/schema.py, roots.py, model/config.py), so this output cannot drift from
what `train`, `finetune` and `eval` accept.
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
import types
import typing
from typing import Any, Union

DATA_EXPLAIN = "llmtrain config explain --data-config"
COMMAND_OF_ROOT = {"PretrainRunConfig": "train", "FinetuneRunConfig": "finetune", "EvalRunConfig": "eval"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="explain the run config: sections, keys, types, defaults, help",
                       description="Inspect the run config schema that `train`, `finetune` and `eval` read.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    e = actions.add_parser(
        "explain", help="list sections, a section's keys, or one key (type, default, accepted values, help)",
        description="Without TARGET: the sections and which commands read them. With a section (train, "
                    "finetune.lora): its keys. With a key (train.precision): everything about it.",
        epilog="Set any key in a recipe YAML or with --set KEY=VALUE, e.g. "
               "`llmtrain train --config configs/pretrain/tiny.yaml --set train.precision=bf16`.")
    e.add_argument("target", nargs="?", default=None, metavar="SECTION[.KEY]",
                   help="a section (train), a nested section (finetune.lora) or a key (train.precision)")
    e.add_argument("--data-config", action="store_true",
                   help="explain the data config of `prepare` and `mixture` (sources, tokenizer, sharding) instead")
    e.set_defaults(func=run)


def sections() -> dict[str, tuple[Any, str, list[str]]]:
    """Top-level sections: name -> (dataclass or mapping type, help, commands that read it)."""
    from llmtrain.config.roots import ROOTS

    out: dict[str, tuple[Any, str, list[str]]] = {}
    for root in ROOTS:
        hints = typing.get_type_hints(root)
        for f in dataclasses.fields(root):
            tp, help_, users = out.get(f.name, (hints[f.name], f.metadata.get("help", ""), []))
            users.append(COMMAND_OF_ROOT[root.__name__])
            out[f.name] = (tp, help_, users)
    return out


def section_type(tp: Any) -> type | None:
    """The dataclass behind a field's annotation (``RopeScaling | None`` -> RopeScaling, ``list[SourceConfig]``
    -> SourceConfig), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp) or (None,)
        return item if dataclasses.is_dataclass(item) else None
    if typing.get_origin(tp) in (Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "section"
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]" if args else origin.__name__
    return "any" if tp is Any else getattr(tp, "__name__", str(tp))


def yaml_value(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def default_of(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return yaml_value(f.default)
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "(section)" if dataclasses.is_dataclass(value) else yaml_value(value)
    return "(required)"


def rules_of(f: dataclasses.Field) -> list[str]:
    m = f.metadata
    out = []
    if m.get("choices"):
        out.append("one of " + ", ".join(yaml_value(c) for c in m["choices"]))
    for key, sign in (("min", ">="), ("gt", ">"), ("max", "<=")):
        if m.get(key) is not None:
            out.append(f"{sign} {yaml_value(m[key])}")
    return out


def key_lines(prefix: str, f: dataclasses.Field, tp: Any, *, indent: str = "  ",
              explain: str = "llmtrain config explain") -> list[str]:
    """Two or more lines for one key: name (type, default, rules), then its help wrapped."""
    facts = [type_name(tp), f"default {default_of(f)}", *rules_of(f)]
    sub = section_type(tp)
    if sub is not None:
        kind = "list of sections" if typing.get_origin(tp) is list else \
            "section or null" if sub is not tp else "section"
        facts = [kind, f"default {default_of(f)}"]
    head = f"{indent}{prefix}{f.name}  ({'; '.join(facts)})"
    help_ = f.metadata.get("help", "")
    if sub is not None:
        help_ += f"; keys: `{explain} {prefix}{f.name}`"
    body = textwrap.wrap(help_, width=100, initial_indent=indent + "    ", subsequent_indent=indent + "    ")
    return [head, *body]


def explain_sections() -> list[str]:
    rows = sections()
    width = max(map(len, rows))
    out = ["Run config sections (each command reads the sections listed for it; a section of another command is "
           "an error):", ""]
    for name, (_tp, help_, users) in rows.items():
        out.append(f"  {name.ljust(width)}  {help_}  [{', '.join(users)}]")
    out += ["", "`llmtrain config explain SECTION` lists a section's keys (e.g. train); "
                "`llmtrain config explain SECTION.KEY` explains one key (e.g. train.precision)."]
    return out


def explain_section(path: str, cls: type, help_: str, users: list[str], explain: str = "llmtrain config explain") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = [f"{path}: {help_}" + (f"  [read by: {', '.join(users)}]" if users else ""), ""]
    for f in dataclasses.fields(cls):
        if f.init:
            out += key_lines(f"{path}.", f, hints[f.name], explain=explain)
    return out


def data_config_keys() -> dict[str, tuple[dataclasses.Field, Any]]:
    """Top-level keys of a data config (``llmtrain prepare`` / ``mixture``): name -> (field, annotation)."""
    from llmtrain.config.data import DataConfig

    hints = typing.get_type_hints(DataConfig)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(DataConfig) if f.init}


def explain_data_config() -> list[str]:
    from llmtrain.config.data import DataConfig

    out = ["Data config (`llmtrain prepare --config`, `llmtrain mixture --config`, a run's data.config):", ""]
    hints = typing.get_type_hints(DataConfig)
    for f in dataclasses.fields(DataConfig):
        out += key_lines("", f, hints[f.name], explain=DATA_EXPLAIN)
    return out + ["", "`llmtrain config explain --data-config KEY` explains one key (e.g. sources.weight)."]


def resolve(target: str, *, data_config: bool = False) -> list[str]:
    """Lines for a section, a nested section or a key; UserError naming the closest valid name."""
    from llmtrain.config.base import closest
    from llmtrain.errors import UserError

    name, *rest = target.split(".")
    explain = DATA_EXPLAIN if data_config else "llmtrain config explain"
    if data_config:
        top: dict[str, Any] = data_config_keys()
        users = ["prepare", "mixture"]
        if name not in top:
            raise UserError(f"no data config key {name!r}{closest(name, top)}; keys: {', '.join(top)}")
        f, tp = top[name]
        path, cls = "", None
    else:
        top = sections()
        if name not in top:
            raise UserError(f"no config section {name!r}{closest(name, top)}; sections: {', '.join(top)} "
                            f"(`llmtrain config explain` lists them)")
        tp, help_, users = top[name]
        if section_type(tp) is None:  # a raw mapping (deepspeed)
            if rest:
                raise UserError(f"{name} is a free-form mapping ({help_}); its keys are not part of the schema")
            return [f"{name}: {help_}  [read by: {', '.join(users)}]", f"  type {type_name(tp)}, default {{}}"]
        cls, path, f = section_type(tp), name, None
    while f is None or rest or section_type(tp) is not None:
        if f is not None:  # descend into the section f names
            cls, path = section_type(tp), f"{path}.{f.name}".lstrip(".")
            help_ = f.metadata.get("help", "")
        if not rest:
            return explain_section(path, cls, help_, users, explain)
        key = rest.pop(0)
        fields = {x.name: x for x in dataclasses.fields(cls) if x.init}
        if key not in fields:
            raise UserError(f"no key {key!r} in section {path}{closest(key, fields)}; keys: {', '.join(fields)}")
        f, tp = fields[key], typing.get_type_hints(cls)[key]
        if section_type(tp) is None and rest:
            raise UserError(f"{path}.{key} is a {type_name(tp)} key, not a section; drop '.{'.'.join(rest)}'")
    where = f"{path}.".lstrip(".")
    example = default_of(f) if default_of(f) not in ("(required)", "null") else "VALUE"
    section = f"section {path}: `{explain} {path}`" if path else "top level"
    # a list of sections (a data config's sources) is indexed by position: sources.0.weight
    setter = f"sources.0.{f.name}" if data_config and path == "sources" else f"{where}{f.name}"
    yaml_where = f"under `{path}:` in" if path else "at the top of"
    return key_lines(where, f, tp, indent="", explain=explain) + [
        f"    read by: {', '.join(users)} ({section})",
        f"    set with: --set {setter}={example}  (or `{f.name}:` {yaml_where} the YAML)"]


def run(args: argparse.Namespace) -> int:
    if args.data_config:
        lines = explain_data_config() if args.target is None else resolve(args.target, data_config=True)
    else:
        lines = explain_sections() if args.target is None else resolve(args.target)
    print("\n".join(lines))
    return 0
