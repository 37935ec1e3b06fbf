"""Consolidated weights on disk: one safetensors file plus the architecture beside it.

This is the only place that knows how tied embeddings are stored: the output projection of a model
with ``tie_embeddings`` is written once (as the embedding; safetensors refuses shared storage anyway)
and re-shared on load. Checkpoints written before that rule stored a copy; they load unchanged.

Nothing here unpickles: a step directory without ``model.safetensors`` is refused, naming the command
that consolidates DeepSpeed's own ``*.pt`` states (``llmtrain export --from-deepspeed-states``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.modelio.layout import HEAD_FILE, WEIGHTS, write_model_config

_EMBEDDING, _OUTPUT = "tok_embeddings.weight", "output.weight"


def untie_output(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Without the tied output projections (every ``[prefix.]output.weight`` whose embedding is present)."""
    if not cfg.tie_embeddings:
        return dict(state_dict)
    tied = {k for k in state_dict if k.endswith(_OUTPUT) and k[:-len(_OUTPUT)] + _EMBEDDING in state_dict}
    return {k: v for k, v in state_dict.items() if k not in tied}


def tie_output(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """With tied embeddings, point every ``[prefix.]output.weight`` at its embedding tensor (in place)."""
    if cfg.tie_embeddings:
        for k in [k for k in state_dict if k.endswith(_EMBEDDING)]:
            state_dict[k[:-len(_EMBEDDING)] + _OUTPUT] = state_dict[k]
    return state_dict


def save_weights(state_dict: dict[str, torch.Tensor], cfg: ModelConfig, directory: str | Path, *,
                 head: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``model.yaml`` (architecture only) [+ ``head.json``] into ``directory``."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in untie_output(state_dict, cfg).items()}
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    write_model_config(out, cfg)
    if head:
        (out / HEAD_FILE).write_text(json.dumps(head, indent=2))
    return out / WEIGHTS


def _missing_weights_error(directory: Path) -> CheckpointError:
    path = directory / WEIGHTS
    if any(directory.glob("*model_states.pt")) or any(directory.glob("*optim_states.pt")):
        return CheckpointError(
            f"{path} is missing; {directory} holds only DeepSpeed's states. Consolidate them (read with torch's "
            f"restricted unpickler) with `llmtrain export --checkpoint {directory} --out DIR --from-deepspeed-states` "
            f"and use DIR")
    return CheckpointError(f"{path} is missing: {directory} holds neither consolidated weights nor DeepSpeed "
                           f"states; it is not a usable checkpoint or model directory")


def load_weights(directory: str | Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The state dict in ``directory/model.safetensors``, tied output projections re-shared."""
    from safetensors.torch import load_file

    d = Path(directory)
    path = d / WEIGHTS
    if not path.is_file():
        raise _missing_weights_error(d)
    try:
        sd = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or damaged files
        raise CheckpointError(f"{path} is truncated or damaged ({e}); use an intact copy or an earlier "
                              f"checkpoint") from None
    return tie_output(sd, cfg)



class TensorReader:
    """Named tensors read one at a time from safetensors files (a layer's worth, never a whole state dict).

    ``files`` maps each name (ours) to the file holding it and its name there. Torch ``.bin`` files
    are memory-mapped (``weights_only``), so they are not read whole either.
    """

    def __init__(self, files: dict[str, tuple[Path, str]]) -> None:
        self.files = files
        self._bins: dict[Path, dict[str, torch.Tensor]] = {}

    @classmethod
    def of_files(cls, paths: list[Path]) -> TensorReader:
        files: dict[str, tuple[Path, str]] = {}
        for path in paths:
            for name in _names_in(path):
                files[name] = (path, name)
        return cls(files)

    def names(self) -> list[str]:
        return list(self.files)

    def renamed(self, rename: dict[str, str]) -> TensorReader:
        """The same tensors under new names (``rename``: old -> new; names not in it are dropped)."""
        return TensorReader({rename[k]: v for k, v in self.files.items() if k in rename})

    def shape(self, name: str) -> tuple[int, ...]:
        path, key = self.files[name]
        if path.suffix != ".safetensors":
            return tuple(self._bin(path)[key].shape)
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return tuple(f.get_slice(key).get_shape())

    def get(self, name: str) -> torch.Tensor:
        path, key = self.files[name]
        if path.suffix != ".safetensors":
            return self._bin(path)[key]
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor(key)
        except Exception as e:  # safetensors raises its own error types for truncated or damaged files
            raise CheckpointError(f"{path} is truncated or damaged ({e}); use an intact copy") from None

    def _bin(self, path: Path) -> dict[str, torch.Tensor]:
        if path not in self._bins:
            self._bins[path] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return self._bins[path]


def _names_in(path: Path) -> list[str]:
    if path.suffix != ".safetensors":
        return list(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as e:
        raise CheckpointError(f"{path} is truncated or damaged ({e}); use an intact copy or an earlier "
                              f"checkpoint") from None


def open_weights(directory: str | Path) -> TensorReader:
    """A :class:`TensorReader` over ``directory/model.safetensors`` (tied outputs are absent, see tie_output)."""
    d = Path(directory)
    if not (d / WEIGHTS).is_file():
        raise _missing_weights_error(d)
    return TensorReader.of_files([d / WEIGHTS])


_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}


class StreamedSafetensors:
    """A safetensors file written tensor by tensor: the header comes from the layout (names, dtypes,
    shapes) known up front, then each tensor's bytes are appended as it arrives, so no full state dict
    is ever held. The file appears under its name only when complete (written as ``*.tmp``, renamed)."""

    def __init__(self, path: Path, layout: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None) -> None:
        self.path, self._order = path, list(layout)
        header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        for name, (dtype, shape) in layout.items():
            size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
            header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        self._layout, self._next = layout, 0
        self._tmp = path.with_name(path.name + ".tmp")
        self._file = open(self._tmp, "wb")  # noqa: SIM115 (closed in close())
        self._file.write(len(text).to_bytes(8, "little") + text)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        want = self._order[self._next] if self._next < len(self._order) else None
        dtype, shape = self._layout.get(name, (None, None))
        if name != want or tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"{self.path}: got {name} {tensor.dtype} {tuple(tensor.shape)}, expected {want} "
                             f"{dtype} {shape}")
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        self._file.write(data.data)
        self._next += 1

    def close(self) -> Path:
        if self._next != len(self._order):
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            raise ValueError(f"{self.path}: {len(self._order) - self._next} tensor(s) were never written")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)
        return self.path
