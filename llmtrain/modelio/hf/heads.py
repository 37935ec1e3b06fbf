"""A classifier as the family's ``*ForSequenceClassification`` (``LlamaForSequenceClassification`` ...).

Hugging Face's class is the backbone (``model.*``) plus a bias-free ``score`` on the hidden state
of the last token that is not ``pad_token_id``. Ours (:class:`llmtrain.model.heads.SequenceClassifier`)
is the same computation under three conditions, checked before anything is written:

- pooling ``last`` (``mean`` pooling has no Hugging Face counterpart);
- a zero ``score.bias``: the HF head has no bias and a bias cannot be folded into a linear map of an
  RMS-normalised state, so a trained bias is refused rather than silently dropped;
- a pad id other than EOS: our examples end with EOS and we pool it; HF pools the last token that
  is not pad, which would be the token before EOS when the two are the same id.

The class name is the causal-LM family's (``Qwen2ForCausalLM`` -> ``Qwen2ForSequenceClassification``).
Classification examples are ``[BOS] text EOS``, so the exported tokenizer appends EOS as well: a
``text-classification`` pipeline on the export sees exactly the ids the classifier was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.modelio.hf.tokenizer import GENERATION_CONFIG, export_tokenizer

CAUSAL_SUFFIX, CLASSIFIER_SUFFIX = "ForCausalLM", "ForSequenceClassification"
_BACKBONE_ONLY = "export the causal-LM backbone alone with `llmtrain export --backbone-only`"


def classifier_problems(score: dict[str, torch.Tensor], head: dict[str, Any], eos_id: int | None) -> list[str]:
    """Why this head is not exactly a ``*ForSequenceClassification`` (empty: it is)."""
    problems = []
    if head.get("pooling", "last") != "last":
        problems.append(f"it pools with {head['pooling']!r}, the Hugging Face class pools the last non-pad token")
    bias = score.get("bias")
    if bias is not None and bool(bias.ne(0).any()):
        problems.append(f"its score layer has a trained bias (max |b| = {float(bias.abs().max()):.3g}) and the "
                        f"Hugging Face score layer has none")
    if eos_id is not None and head.get("pad_id") == eos_id:
        problems.append(f"it was trained with pad id {eos_id} = EOS, so the Hugging Face class would pool the token "
                        f"before the final EOS instead of the EOS")
    return problems


def export_sequence_classifier(backbone: dict[str, torch.Tensor], cfg: ModelConfig, score: dict[str, torch.Tensor],
                               head: dict[str, Any], out_dir: str | Path, *, tokenizer_dir: str | Path | None = None,
                               eos_id: int | None = None, dtype: torch.dtype | None = torch.float32,
                               max_shard_size: int | str = "2GB", source_config: dict[str, Any] | None = None) -> Path:
    """Write a ``*ForSequenceClassification`` directory whose logits equal the classifier's.

    ``score`` is the head's state dict (``weight``, optional ``bias``), ``head`` its ``head.json``
    (``label_names`` or ``labels``, ``pooling``, ``pad_id``). Raises CheckpointError, before writing,
    when the head cannot be represented exactly (see :func:`classifier_problems`).
    """
    from llmtrain.modelio.hf import export_hf, read_hf_weights, save_safetensors

    problems = classifier_problems(score, head, eos_id)
    if problems:
        raise CheckpointError(f"this classifier cannot be exported as a *{CLASSIFIER_SUFFIX} with equal logits: "
                              f"{'; '.join(problems)}. {_BACKBONE_ONLY[0].upper()}{_BACKBONE_ONLY[1:]} "
                              f"(the head stays in the checkpoint)")
    labels = [str(n) for n in head.get("label_names") or head.get("labels") or range(score["weight"].shape[0])]
    if len(labels) != score["weight"].shape[0]:
        raise CheckpointError(f"head.json names {len(labels)} labels but the score layer has "
                              f"{score['weight'].shape[0]} outputs; the checkpoint is inconsistent")
    pad_id = int(head["pad_id"])
    out = export_hf(backbone, cfg, out_dir, tokenizer_dir=tokenizer_dir, dtype=dtype, max_shard_size=max_shard_size,
                    extra_config={"pad_token_id": pad_id}, source_config=source_config)
    weights = {k: v for k, v in read_hf_weights(out).items() if not k.startswith("lm_head.")}
    weights["score.weight"] = score["weight"].to(dtype or score["weight"].dtype)
    for old in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        old.unlink()
    save_safetensors(weights, out, max_shard_size)
    config = json.loads((out / "config.json").read_text())
    arch = config["architectures"][0]
    if not arch.endswith(CAUSAL_SUFFIX):
        raise CheckpointError(f"{out / 'config.json'} names {arch!r}, not a *{CAUSAL_SUFFIX}; {_BACKBONE_ONLY}")
    config.update(architectures=[arch.removesuffix(CAUSAL_SUFFIX) + CLASSIFIER_SUFFIX], pad_token_id=pad_id,
                  id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                  problem_type="single_label_classification")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / GENERATION_CONFIG).unlink(missing_ok=True)  # a classifier does not generate
    if tokenizer_dir is not None:  # it was trained on [BOS] text EOS: the export's tokenizer appends EOS too
        export_tokenizer(tokenizer_dir, out, append_eos=True)
    return out
