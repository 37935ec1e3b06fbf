"""Security: nothing we load can run code.

Weights load from safetensors or with ``torch.load(..., weights_only=True)`` (torch's restricted
unpickler); no pickle/yaml/numpy loader that can build arbitrary objects is used; Hugging Face
code from a model directory (``trust_remote_code``) is never enabled. The one unpickling left is
inside DeepSpeed itself (``load_checkpoint`` and ``zero_to_fp32`` read their own ``*.pt`` files
with full pickle): resume only from checkpoint directories you wrote (docs/failure-modes.md).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch
from clitools import ROOT

PACKAGES = ("llmtrain", "data_prep")


def _sources() -> list[tuple[Path, ast.AST]]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 20
    return [(p, ast.parse(p.read_text(), filename=str(p))) for p in files]


def _name(node: ast.AST) -> str:
    return f"{_name(node.value)}.{node.attr}" if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def test_every_torch_load_is_weights_only():
    calls = [(p, c) for p, tree in _sources() for c in ast.walk(tree)
             if isinstance(c, ast.Call) and _name(c.func) == "torch.load"]
    assert calls, "expected torch.load calls (RNG states, HF .bin weights, DeepSpeed stage-0 states)"
    unsafe = [f"{p.relative_to(ROOT)}:{c.lineno}" for p, c in calls if not _is_const(_kw(c, "weights_only"), True)]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


def test_no_unrestricted_deserializers():
    bad = []
    for p, tree in _sources():
        for c in ast.walk(tree):
            if not isinstance(c, ast.Call):
                continue
            name = _name(c.func)
            unsafe = (name in ("pickle.load", "pickle.loads", "dill.load", "cloudpickle.load", "yaml.unsafe_load",
                               "yaml.full_load", "marshal.loads", "eval", "exec")
                      or (name == "yaml.load" and "Safe" not in ast.unparse(_kw(c, "Loader") or ast.Constant(None)))
                      or (name in ("np.load", "numpy.load") and _is_const(_kw(c, "allow_pickle"), True)))
            if unsafe:
                bad.append(f"{p.relative_to(ROOT)}:{c.lineno} {name}")
    assert not bad, bad


def test_trust_remote_code_is_never_enabled():
    found = []
    for p, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                found.append((p, node.value))
            elif isinstance(node, ast.Dict):
                found += [(p, v) for k, v in zip(node.keys, node.values, strict=True)
                          if isinstance(k, ast.Constant) and k.value == "trust_remote_code"]
    enabled = [f"{p.relative_to(ROOT)}: trust_remote_code={ast.unparse(v)}" for p, v in found if not _is_const(v, False)]
    assert not enabled, enabled
    text = "\n".join(p.read_text() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    assert "trust_remote_code=True" not in text and '"trust_remote_code": True' not in text


class _Payload:
    """Unpickling this runs ``os.system``: what a tampered checkpoint file could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_rng_file_is_refused_without_running_it(tmp_path):
    from llmtrain.training.checkpoint import load_rng

    marker = tmp_path / "pwned"
    torch.save({"torch": _Payload(marker)}, tmp_path / "rng_rank0.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        load_rng(tmp_path, 0)
    assert not marker.exists()


def test_a_tampered_stage0_state_file_is_refused_without_running_it(tmp_path):
    from llmtrain.errors import CheckpointError
    from llmtrain.training.checkpoint import consolidate_deepspeed

    marker = tmp_path / "pwned"
    step = tmp_path / "run" / "step_000001"
    step.mkdir(parents=True)
    torch.save({"module": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, step / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        consolidate_deepspeed(step)
    assert not marker.exists()
