"""The import rules of docs/architecture.md, checked over the AST of every module of the package.

Each rule names the modules it constrains and the imports they may not make (or the only imports
they may make). The checker is also run on a fixture tree that breaks every rule once, so that a
rule that can no longer fail is noticed.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Rule:
    text: str
    scope: tuple[str, ...]  # module prefixes the rule applies to
    forbidden: tuple[str, ...] = ()  # imports (prefixes) they may not make
    allowed_internal: tuple[str, ...] | None = None  # if set: the only llmtrain/data_prep imports allowed
    allowed_external: tuple[str, ...] | None = None  # if set: the only third-party imports allowed


RULES = (
    Rule("the model imports only torch, the config machinery and itself", ("llmtrain.model",),
         allowed_internal=("llmtrain.model", "llmtrain.config.base"),
         allowed_external=("torch", "flash_attn")),  # flash-attn: an optional kernel package
    Rule("data code imports neither torch.distributed nor the model", ("llmtrain.data",),
         forbidden=("torch.distributed", "llmtrain.model", "deepspeed")),
    Rule("only the engine imports deepspeed", ("llmtrain", "data_prep"), forbidden=("deepspeed",)),
    Rule("training never imports evaluation or objectives", ("llmtrain.training",),
         forbidden=("llmtrain.eval", "llmtrain.objectives")),
    Rule("nothing imports the CLI commands", ("llmtrain", "data_prep"), forbidden=("llmtrain.commands",)),
    Rule("data_prep imports only config, data formats, errors, file helpers and the logger from the package", ("data_prep",),
         allowed_internal=("data_prep", "llmtrain.config", "llmtrain.data", "llmtrain.errors", "llmtrain.fsutil",
                           "llmtrain.distributed.logging")),
    Rule("model I/O knows no training, evaluation, objective or engine", ("llmtrain.modelio",),
         forbidden=("llmtrain.training", "llmtrain.eval", "llmtrain.objectives", "llmtrain.engine", "deepspeed")),
    Rule("the planner computes from configs only (no training, no engine implementation)", ("llmtrain.planning",),
         forbidden=("llmtrain.training", "llmtrain.objectives", "llmtrain.engine.deepspeed", "llmtrain.eval")),
)
# Who may do what the rules above forbid to everyone else.
EXEMPT = {
    "only the engine imports deepspeed": ("llmtrain.engine",),
    "nothing imports the CLI commands": ("llmtrain.commands", "llmtrain.cli"),
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = module.split(".")[: -node.level] if not module.endswith("__init__") else module.split(".")
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names if name.startswith(("llmtrain", "data_prep"))]
    return out


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(root: Path, packages: tuple[str, ...] = ("llmtrain", "data_prep")) -> list[str]:
    found = []
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            module = _module_name(path, root)
            for lineno, name in _imports(ast.parse(path.read_text()), module):
                for rule in RULES:
                    if not _matches(module, rule.scope) or _matches(module, EXEMPT.get(rule.text, ())):
                        continue
                    internal = name.startswith(("llmtrain", "data_prep"))
                    bad = _matches(name, rule.forbidden)
                    if internal and rule.allowed_internal is not None and not _matches(name, rule.allowed_internal):
                        bad = True
                    top = name.split(".")[0]
                    if (not internal and rule.allowed_external is not None and top not in sys.stdlib_module_names
                            and top != "__future__" and not _matches(top, rule.allowed_external)):
                        bad = True
                    if bad:
                        found.append(f"{path.relative_to(root)}:{lineno}: imports {name} ({rule.text})")
    return found


def test_the_package_follows_the_import_rules():
    assert violations(ROOT) == []


def test_every_rule_fails_on_a_module_that_breaks_it(tmp_path):
    broken = {
        "llmtrain/model/bad.py": "import numpy\nfrom llmtrain.training.loop import Trainer\n",
        "llmtrain/data/bad.py": "import torch.distributed as dist\nfrom llmtrain.model.transformer import Transformer\n",
        "llmtrain/training/bad.py": "import deepspeed\nfrom llmtrain.eval.suite import run_evaluation\n"
                                    "from llmtrain.objectives import get\n",
        "llmtrain/eval/bad.py": "from llmtrain.commands import train\n",
        "data_prep/bad.py": "from llmtrain.training.loop import Trainer\n",
        "llmtrain/modelio/bad.py": "from llmtrain.engine import build_engine\n",
        "llmtrain/planning/bad.py": "from llmtrain.training.loop import Trainer\n",
        "llmtrain/engine/ok.py": "import deepspeed\n",  # the engine may
    }
    for rel, text in broken.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = "\n".join(violations(tmp_path))
    for rule in RULES:
        assert f"({rule.text})" in found, f"rule never fired: {rule.text}\n{found}"
    assert "llmtrain/engine/ok.py" not in found
    assert "llmtrain/model/bad.py:1: imports numpy" in found


def test_only_the_engine_mentions_deepspeed_and_no_fault_hooks_ship():
    hits = {p.relative_to(ROOT).as_posix() for p in (ROOT / "llmtrain").rglob("*.py")
            if "import deepspeed" in p.read_text() or "from deepspeed" in p.read_text()}
    assert hits <= {"llmtrain/engine/deepspeed.py", "llmtrain/engine/states.py", "llmtrain/engine/construction.py",
                    "llmtrain/engine/universal_convert.py"}, hits
    assert not [p for p in (ROOT / "llmtrain").rglob("*.py") if "LLMTRAIN_FAULT" in p.read_text()]


def test_modules_stay_small():
    big = {p.relative_to(ROOT).as_posix(): n for p in (ROOT / "llmtrain").rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 320}
    assert big == {}, f"modules over ~300 lines: {big}"
