"""Security: nothing we load can run code.

Weights load from safetensors or with ``torch.load(..., weights_only=True)`` (torch's restricted
unpickler); no pickle/yaml/numpy loader that can build arbitrary objects is used; Hugging Face
code from a model directory (``trust_remote_code``) is never enabled. DeepSpeed's own readers
(``load_checkpoint``, ``ds_to_universal``, ``zero_to_fp32``) pass ``weights_only=False``; they run
under llmtrain/engine/safe_load.py, which forces the restricted unpickler with an allow-list of
DeepSpeed's types (test_pickle_payloads.py), unless the user opts in (``checkpoint.trust_pickle``,
``export --trust-pickle``).
"""

from __future__ import annotations

import ast
import json
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
    from llmtrain.training.checkpointing import load_rng

    marker = tmp_path / "pwned"
    torch.save({"torch": _Payload(marker)}, tmp_path / "rng_rank0.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        load_rng(tmp_path, 0)
    assert not marker.exists()


def test_a_tampered_stage0_state_file_is_refused_without_running_it(tmp_path):
    from llmtrain.engine.states import consolidate_deepspeed
    from llmtrain.errors import CheckpointError

    marker = tmp_path / "pwned"
    step = tmp_path / "run" / "step_000001"
    step.mkdir(parents=True)
    torch.save({"module": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, step / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match=f"^{step / 'mp_rank_00_model_states.pt'} holds a pickled posix.system"):
        consolidate_deepspeed(step, allow_unpickle=True)  # a module state dict is never read with full pickle
    assert not marker.exists()


def test_zero_partitioned_states_are_read_with_the_restricted_unpickler(tmp_path):
    from llmtrain.engine.states import consolidate_deepspeed
    from llmtrain.errors import CheckpointError

    marker = tmp_path / "pwned"
    step = tmp_path / "run" / "step_000001"
    step.mkdir(parents=True)
    # zero_to_fp32 reads the model states first (the full test with real files: test_pickle_payloads.py)
    states = step / "mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, states)
    torch.save({"state": {}}, step / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    with pytest.raises(CheckpointError, match=f"^{states} holds a pickled posix.system.*--from-deepspeed-states --trust-pickle"):
        consolidate_deepspeed(step)
    assert not marker.exists()


def _deepspeed_only_checkpoint(root: Path):
    """A ZeRO-0 checkpoint whose consolidated model.safetensors is gone (DeepSpeed's states only)."""
    from llmtrain.model.config import ModelConfig
    from llmtrain.model.transformer import Transformer
    from llmtrain.modelio.layout import LATEST, STATE, write_model_config

    cfg = ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, multiple_of=16, max_seq_len=16)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    step = root / "run" / "step_000002"
    step.mkdir(parents=True)
    (step / STATE).write_text(json.dumps({"step": 2}))
    write_model_config(step, cfg)
    # what DeepSpeed saves: the engine's module (the trainer's loss wrapper, hence "model.")
    module = {f"model.{k}": v for k, v in model.state_dict().items() if not k.startswith("rope.")}
    torch.save({"module": module}, step / "mp_rank_00_model_states.pt")
    (root / "run" / LATEST).write_text(step.name)
    return root / "run", model


def test_export_uses_deepspeed_states_only_when_opted_in(tmp_path, capsys):
    from safetensors.torch import load_file

    from llmtrain.cli import main

    run, model = _deepspeed_only_checkpoint(tmp_path)
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "step_000002/model.safetensors is missing" in err
    assert f"llmtrain export --checkpoint {run / 'step_000002'} --out DIR --from-deepspeed-states" in err
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--dtype", "fp32",
                 "--from-deepspeed-states"]) == 0
    exported = load_file(str(out / "model.safetensors"))
    assert torch.equal(exported["model.embed_tokens.weight"], model.tok_embeddings.weight)
    assert torch.equal(exported["lm_head.weight"], model.output.weight)
