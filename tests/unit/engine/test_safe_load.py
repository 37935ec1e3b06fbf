"""The restricted reader of DeepSpeed's files: DeepSpeed's own types load, anything else is refused
by name without running, damaged files stay damaged-file errors, and torch.load is restored."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from llmtrain.engine.safe_load import ALLOWED_TYPES, UnsafeCheckpointFile, restricted_torch_load


class _Payload:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_deepspeeds_own_types_load_with_weights_only_false_requested(tmp_path, monkeypatch):
    """Every allowed type as DeepSpeed pickles it, fp16's dynamic loss scaler included (CPU runs cannot
    write fp16 checkpoints); the caller's weights_only=False is overridden."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    from deepspeed.runtime.fp16.loss_scaler import CreateLossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    dynamic = CreateLossScaler(dtype=torch.float16, static_loss_scale=0, dynamic_scaling=True,
                               dynamic_loss_args={"init_scale": 2.0**16, "scale_window": 1000, "delayed_shift": 2,
                                                  "consecutive_hysteresis": False, "min_scale": 1})
    static = CreateLossScaler(dtype=torch.bfloat16, static_loss_scale=1.0, dynamic_scaling=False, dynamic_loss_args=None)
    state = {"zero_stage": ZeroStageEnum.gradients, "loss_scaler": dynamic, "static": static,
             "param_slice_mappings": [{"w": fragment_address(numel=4, start=0)}], "t": torch.arange(3)}
    assert {f"{type(v).__module__}.{type(v).__qualname__}" for v in (dynamic, static, ZeroStageEnum.gradients)} \
        | {"deepspeed.utils.tensor_fragment.fragment_address"} == set(ALLOWED_TYPES)
    path = tmp_path / "optim_states.pt"
    torch.save(state, path)
    with restricted_torch_load("OPT-IN"):
        got = torch.load(path, map_location="cpu", weights_only=False)
    assert got["zero_stage"] is ZeroStageEnum.gradients and torch.equal(got["t"], state["t"])
    assert got["loss_scaler"].cur_scale == 2.0**16 and got["loss_scaler"].dynamic and got["loss_scaler"].dtype == torch.float16
    assert got["param_slice_mappings"][0]["w"] == fragment_address(numel=4, start=0)


def test_a_payload_is_refused_by_name_and_torch_load_is_restored(tmp_path):
    original = torch.load
    marker, path = tmp_path / "pwned", tmp_path / "states.pt"
    torch.save({"x": _Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointFile) as e, restricted_torch_load("resume with --set k=true"):
        assert torch.load is not original
        torch.load(path, weights_only=False)
    assert str(e.value).startswith(f"{path} holds a pickled posix.system, which is not among the types")
    assert str(e.value).endswith("read it with full pickle: resume with --set k=true")
    assert not marker.exists() and torch.load is original


def test_a_damaged_file_is_not_called_unsafe(tmp_path):
    path = tmp_path / "states.pt"
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(pickle.UnpicklingError) as e, restricted_torch_load(None):
        torch.load(path, weights_only=False)
    assert not isinstance(e.value, UnsafeCheckpointFile)
