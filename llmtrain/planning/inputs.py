"""What a plan is asked for: the model (preset, YAML or directory) and the cluster and run shape."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llmtrain.errors import UserError
from llmtrain.model.config import ModelConfig

OFFLOAD_CHOICES = ("none", "optimizer", "params", "both")


@dataclass(frozen=True)
class PlanRequest:
    """A run shape to plan; each field is one ``llmtrain plan`` flag (named in its errors)."""

    nodes: int
    gpus_per_node: int
    gpu_memory_gib: float
    zero_stage: int
    micro_batch: int
    seq_len: int
    offload: str = "none"
    precision: str = "bf16"
    activation_checkpointing: str = "none"
    mfu: float = 0.4
    peak_tflops: float = 989.0
    global_batch: int | None = None
    reserve_gib: float = 2.0

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def offload_optimizer(self) -> bool:
        return self.offload in ("optimizer", "both")

    @property
    def offload_params(self) -> bool:
        return self.offload in ("params", "both")

    def check(self) -> None:
        """Raise one UserError naming every bad flag and the accepted values."""
        out = []
        for flag, value in (("--nodes", self.nodes), ("--gpus-per-node", self.gpus_per_node),
                            ("--micro-batch", self.micro_batch), ("--seq-len", self.seq_len)):
            if value < 1:
                out.append(f"{flag} {value} must be a whole number >= 1")
        if not self.gpu_memory_gib > 0:
            out.append(f"--gpu-memory {self.gpu_memory_gib} must be > 0 GiB (e.g. 80 for an H100 80GB)")
        if self.zero_stage not in (0, 1, 2, 3):
            out.append(f"--zero {self.zero_stage} is not a ZeRO stage; use 0, 1, 2 or 3")
        if self.offload not in OFFLOAD_CHOICES:
            out.append(f"--offload {self.offload!r} is not one of {', '.join(OFFLOAD_CHOICES)}")
        elif self.offload_params and self.zero_stage != 3:
            out.append(f"--offload {self.offload}: parameter offload needs --zero 3 (got --zero {self.zero_stage}); "
                       f"use --offload optimizer or --zero 3")
        elif self.offload_optimizer and self.zero_stage == 0:
            out.append("--offload optimizer needs --zero 1, 2 or 3 (DeepSpeed offloads the partitioned optimizer)")
        if self.precision not in ("bf16", "fp32"):
            out.append(f"--precision {self.precision!r} is not one of bf16, fp32")
        if self.activation_checkpointing not in ("none", "selective", "full"):
            out.append(f"--activation-checkpointing {self.activation_checkpointing!r} is not one of none, selective, full")
        if not 0 < self.mfu <= 1:
            out.append(f"--mfu {self.mfu} must be a fraction in (0, 1], e.g. 0.4")
        if not self.peak_tflops > 0:
            out.append(f"--peak-tflops {self.peak_tflops} must be > 0 (989 for H100 SXM bf16 dense, 312 for A100)")
        if self.reserve_gib < 0:
            out.append(f"--reserve {self.reserve_gib} must be >= 0 GiB")
        if self.global_batch is not None and (self.global_batch < 1 or
                                              self.global_batch % (self.micro_batch * self.world_size)):
            out.append(f"--global-batch {self.global_batch} must be a positive multiple of micro batch x GPUs = "
                       f"{self.micro_batch} x {self.world_size} = {self.micro_batch * self.world_size}")
        if out:
            raise UserError("llmtrain plan: " + "; ".join(out))


def presets_dir() -> Path | None:
    """configs/model/ of the checkout (beside the package), else of the current directory."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (base / "configs" / "model").is_dir():
            return base / "configs" / "model"
    return None


def resolve_model(spec: str) -> tuple[ModelConfig, str | None]:
    """The architecture named by ``--model`` and the activation checkpointing its YAML asks for (if any).

    ``spec`` is a preset name (``configs/model/<spec>.yaml``), a model or run-config YAML (its
    ``model:`` section), a Hugging Face directory (``config.json``, read through the family config
    maps: no weights are loaded) or an llmtrain model/step directory (``model.yaml``).
    """
    path = Path(spec)
    if path.is_dir():
        if (path / "config.json").is_file():
            from llmtrain.modelio.hf.families import model_config_from_hf
            try:
                hf = json.loads((path / "config.json").read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise UserError(f"--model {spec}: {path / 'config.json'} is unreadable ({e})") from None
            return model_config_from_hf(hf, name=path.name), None
        if (path / "model.yaml").is_file():
            from llmtrain.modelio.layout import read_model_config
            return read_model_config(path), None
        raise UserError(f"--model {spec}: the directory has neither config.json (Hugging Face) nor model.yaml "
                        f"(llmtrain); pass a preset name, a model YAML or a model directory")
    if not path.is_file() and path.suffix not in (".yaml", ".yml"):
        presets = presets_dir()
        if presets is not None and (presets / f"{spec}.yaml").is_file():
            path = presets / f"{spec}.yaml"
        else:
            names = sorted(p.stem for p in presets.glob("*.yaml")) if presets else []
            raise UserError(f"--model {spec!r} is not a preset ({', '.join(names) or 'no configs/model/ found'}), "
                            f"a YAML file or a model directory; pass one of those")
    if not path.is_file():
        raise UserError(f"--model {spec}: no such file; pass a preset name, a model YAML or a model directory")
    return _from_yaml(path)


def _from_yaml(path: Path) -> tuple[ModelConfig, str | None]:
    from llmtrain.config.base import build
    from llmtrain.config.loader import read_yaml
    from llmtrain.config.schema import ModelSection

    data = read_yaml(path)
    if isinstance(data.get("model"), dict):  # a run config: its model section
        data = data["model"]
    section = build(ModelSection, data, prefix="model", source=str(path))
    problems = section.check()
    if problems:
        raise UserError(f"--model {path}: " + "; ".join(problems))
    return section.architecture(), section.activation_checkpointing
