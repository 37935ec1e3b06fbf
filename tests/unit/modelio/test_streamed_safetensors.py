"""StreamedSafetensors writes a file safetensors reads back exactly, tensor by tensor, and leaves no
file under the final name unless every tensor arrived in the declared order."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from llmtrain.modelio.weights import StreamedSafetensors, TensorReader


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"layers.0.w": torch.randn(3, 5, generator=g), "layers.0.b": torch.randn(7, generator=g).bfloat16(),
            "ids": torch.arange(3), "half": torch.randn(2, 2, 3, generator=g).half(), "scalar": torch.tensor(2.5)}


def layout(sd: dict[str, torch.Tensor]) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    return {k: (v.dtype, tuple(v.shape)) for k, v in sd.items()}


def test_round_trip_through_safetensors_and_the_lazy_reader(tmp_path):
    sd = tensors()
    w = StreamedSafetensors(tmp_path / "m.safetensors", layout(sd))
    for k, v in sd.items():
        w.write(k, v)
    path = w.close()
    back = load_file(str(path))
    assert list(back) == list(sd) and all(torch.equal(back[k], v) for k, v in sd.items())
    reader = TensorReader.of_files([path])
    assert reader.shape("half") == (2, 2, 3) and torch.equal(reader.get("layers.0.b"), sd["layers.0.b"])
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_out_of_order_wrong_shape_or_missing_tensors_are_refused(tmp_path):
    sd = tensors()
    w = StreamedSafetensors(tmp_path / "m.safetensors", layout(sd))
    with pytest.raises(ValueError, match="got layers.0.b .* expected layers.0.w"):
        w.write("layers.0.b", sd["layers.0.b"])
    with pytest.raises(ValueError, match=r"expected layers.0.w torch.float32 \(3, 5\)"):
        w.write("layers.0.w", torch.zeros(5, 3))
    w.write("layers.0.w", sd["layers.0.w"])
    with pytest.raises(ValueError, match="4 tensor"):
        w.close()
    assert list(tmp_path.iterdir()) == []
