"""Low-rank adapters (LoRA) for the transformer's projections, in ~100 lines and without peft.

``apply_lora`` swaps chosen ``nn.Linear`` modules (matched by the last part of their name: wq, wk,
wv, wo, w1, w2, w3) for :class:`LoRALinear`, which keeps the original weight frozen and learns
``B @ A`` of rank r on the side: y = x W^T + (alpha/r) · dropout(x) A^T B^T. B starts at zero so the
adapted model is exactly the base model at step 0. ``merge_lora`` folds the update into W and puts
plain ``nn.Linear`` modules back; ``merge_lora_state`` does the same on a state dict (what a
DeepSpeed engine hands back), with the same arithmetic (:func:`merged_weight`). Either way the result
has the base model's names and exports like any other checkpoint.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from llmtrain.model.config import LoraConfig

LORA_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
_BASE_WEIGHT = re.compile(r"^(?P<prefix>.*)\.base\.weight$")


def merged_weight(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scale: float) -> torch.Tensor:
    """W + scale · B A, computed in fp32 and returned in W's dtype (the one merge formula)."""
    return (weight.float() + scale * (lora_B.float() @ lora_A.float())).to(weight.dtype)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-r update scaled by alpha/r."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.rank = rank
        self.scale = alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        # Same init as the LoRA paper / peft: A like a Linear layer, B zero -> no change at step 0.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def weight(self) -> torch.Tensor:
        """The base weight, so code that reads ``module.weight`` (tied heads, exports) still works."""
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()
        return self.base(x) + self.scale * update

    def merged_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` whose weight is :func:`merged_weight` of this adapter."""
        base = self.base
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                        device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(merged_weight(base.weight, self.lora_A, self.lora_B, self.scale))
            if base.bias is not None:
                out.bias.copy_(base.bias)
        return out


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply_lora(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Freeze every parameter of ``model`` and wrap the target projections; returns wrapped names.

    Parameters outside the backbone that must stay trainable (a classification head) should be
    unfrozen by the caller after this call.
    """
    unknown = sorted(set(cfg.targets) - set(LORA_TARGETS))
    if unknown:
        raise ValueError(f"lora.targets: unknown projection(s) {unknown}; choose from {', '.join(LORA_TARGETS)}")
    for p in model.parameters():
        p.requires_grad_(False)
    targets = set(cfg.targets)
    chosen = [name for name, mod in model.named_modules()
              if isinstance(mod, nn.Linear) and name.rpartition(".")[2] in targets]
    if not chosen:
        raise ValueError(f"lora.targets {sorted(targets)} matched no nn.Linear in {type(model).__name__}")
    for name in chosen:
        _set_submodule(model, name, LoRALinear(model.get_submodule(name), cfg.rank, cfg.alpha, cfg.dropout))
    return chosen


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weight and restore plain ``nn.Linear``; returns how many."""
    names = [name for name, mod in model.named_modules() if isinstance(mod, LoRALinear)]
    for name in names:
        _set_submodule(model, name, model.get_submodule(name).merged_linear())
    return len(names)


def merge_lora_state(state: dict[str, torch.Tensor], lora: LoraConfig) -> dict[str, torch.Tensor]:
    """Fold every adapter of a state dict into its base weight and drop the adapter names.

    ``x.base.weight`` + ``x.lora_A`` + ``x.lora_B`` become ``x.weight``; other ``.base.`` tensors
    (a bias) lose the ``base`` level. Tensors without adapters pass through unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    scale = lora.alpha / lora.rank
    for key, value in state.items():
        if key.endswith((".lora_A", ".lora_B")):
            continue
        m = _BASE_WEIGHT.match(key)
        if m and f"{m['prefix']}.lora_A" in state:
            p = m["prefix"]
            out[f"{p}.weight"] = merged_weight(value, state[f"{p}.lora_A"], state[f"{p}.lora_B"], scale)
        elif ".base." in key:
            out[key.replace(".base.", ".")] = value
        else:
            out[key] = value
    return out


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (``...lora_A``/``...lora_B``), for small adapter-only saves."""
    return {k: v for k, v in model.state_dict().items() if k.endswith(("lora_A", "lora_B"))}


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, for the log line that shows what LoRA saved."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
