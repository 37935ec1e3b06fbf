"""A LoRA run's adapter in PEFT's format, for ``peft.PeftModel.from_pretrained(base, adapter_dir)``.

Checkpoints of a LoRA fine-tune keep the unmerged ``lora_A``/``lora_B`` tensors under our names
(:data:`~llmtrain.modelio.layout.ADAPTER_WEIGHTS`) and the settings (:data:`~llmtrain.modelio.layout.ADAPTER_SETTINGS`).
Ours and PEFT's LoRA compute the same thing, ``W x + (alpha / r) B A x``, with the same shapes
(A: r x in, B: out x r), so the adapter is a rename: ``layers.0.attention.wq.lora_A`` ->
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``, and ``target_modules`` are the
family's module names (q_proj, ..., down_proj). Loaded on the base model the fine-tune started
from, it gives the merged export's logits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.modelio.layout import ADAPTER_SETTINGS, ADAPTER_WEIGHTS

PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_LORA_KEY = re.compile(r"^(?:backbone\.)?(?P<module>.+)\.(?P<part>lora_[AB])$")


def has_adapter(step_dir: Path) -> bool:
    return (step_dir / ADAPTER_WEIGHTS).is_file() and (step_dir / ADAPTER_SETTINGS).is_file()


def read_adapter(step_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The unmerged adapter tensors (our names) and settings saved in a checkpoint."""
    from safetensors.torch import load_file

    try:
        return load_file(str(step_dir / ADAPTER_WEIGHTS)), json.loads((step_dir / ADAPTER_SETTINGS).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"the LoRA adapter in {step_dir} ({ADAPTER_WEIGHTS}, {ADAPTER_SETTINGS}) is unreadable "
                              f"({e}); export with --no-adapter to write the merged model only") from None


def to_peft(adapter: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """PEFT's tensor names for our adapter tensors, and the target module names (the family's)."""
    from llmtrain.modelio.hf.keys import to_hf_state_dict

    modules = {}
    for key in adapter:
        m = _LORA_KEY.match(key)
        if m is None:
            raise CheckpointError(f"adapter tensor {key!r} is not a lora_A/lora_B of a projection")
        modules[m["module"]] = None
    # one rename through the family key map: "<module>.weight" -> "model.layers.N.self_attn.q_proj.weight"
    renamed = to_hf_state_dict({f"{m}.weight": torch.empty(0) for m in modules}, cfg)
    hf_names = dict(zip(modules, (k.removesuffix(".weight") for k in renamed), strict=True))
    out = {}
    for key, t in adapter.items():
        m = _LORA_KEY.match(key)
        assert m is not None
        out[f"base_model.model.{hf_names[m['module']]}.{m['part']}.weight"] = t
    return out, sorted({name.rpartition(".")[2] for name in hf_names.values()})


def export_peft_adapter(adapter: dict[str, torch.Tensor], settings: dict[str, Any], cfg: ModelConfig,
                        out_dir: str | Path, *, dtype: torch.dtype | None = torch.float32) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT's LoRA, task CAUSAL_LM)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, targets = to_peft(adapter, cfg)
    save_file({k: v.to(dtype or v.dtype).contiguous() for k, v in tensors.items()}, str(out / PEFT_WEIGHTS),
              metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": int(settings["rank"]),
        "lora_alpha": float(settings["alpha"]), "lora_dropout": float(settings.get("dropout", 0.0)),
        "target_modules": targets, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
        "use_dora": False, "modules_to_save": None, "inference_mode": True, "init_lora_weights": True,
        # the model the fine-tune started from (a HF directory loads as is; an llmtrain checkpoint exports first)
        "base_model_name_or_path": settings.get("init"),
    }
    (out / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out
