"""Every field of every command's config is read by some code of the package.

A field that nothing reads is a promise the tool does not keep (``logging.progress_bar`` and
``data.num_workers`` once were). The check walks each root's dataclasses and looks for the field
name as an attribute access (``cfg.train.seq_len`` -> ``seq_len``) in the package's AST, outside
the ``check()`` validators (a field only validated is still read by nothing). Fields consumed
generically (``getattr`` over a dataclass's fields) are listed with the function that reads them.
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

from llmtrain.config.data import DataConfig
from llmtrain.config.roots import ROOTS

ROOT = Path(__file__).resolve().parents[3]
# read through dataclasses.fields()/getattr loops, named with the function that does it
GENERIC = {
    "ModelSection.name": "ModelConfig.architecture_dict (recorded in model.yaml and exports)",
}


class _Reads(ast.NodeVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name != "check":  # validators do not count as use
            self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.names.add(node.attr)
        self.generic_visit(node)


def _attribute_names() -> set[str]:
    reads = _Reads()
    for pkg in ("llmtrain", "data_prep"):
        for path in (ROOT / pkg).rglob("*.py"):
            reads.visit(ast.parse(path.read_text()))
    return reads.names


def _fields(cls: type, prefix: str, seen: set[type]) -> list[tuple[str, str]]:
    """(dotted path, Class.field) of every leaf field under ``cls``."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] or ([tp] if dataclasses.is_dataclass(tp) else [])
        out.append((f"{prefix}{f.name}", f"{cls.__name__}.{f.name}"))
        for sub in inner:
            if sub not in seen:
                out += _fields(sub, f"{prefix}{f.name}.", seen | {sub})
    return out


def test_every_config_field_is_read_somewhere():
    used = _attribute_names()
    unread = []
    for root in (*ROOTS, DataConfig):
        for path, qualname in _fields(root, "", {root}):
            name = path.rsplit(".", 1)[-1]
            if name not in used and qualname not in GENERIC:
                unread.append(f"{root.__name__}: {path}")
    assert unread == [], "config fields read by no code: " + ", ".join(sorted(set(unread)))


def test_the_check_catches_an_unread_field():
    @dataclasses.dataclass
    class Section:
        seq_len: int = 1
        surely_nobody_reads_this_knob: int = 0

    leaves = [p for p, _ in _fields(Section, "", {Section})]
    assert [p for p in leaves if p.rsplit(".", 1)[-1] not in _attribute_names()] == ["surely_nobody_reads_this_knob"]
