"""A classifier as the family's ``*ForSequenceClassification`` (``LlamaForSequenceClassification`` ...).

Hugging Face's class is the backbone (``model.*``) plus a bias-free ``score`` on the hidden state
of the last token that is not ``pad_token_id`` (``config.json``). Ours
(:class:`llmtrain.model.heads.SequenceClassifier`) pools the last token of the attention mask, with
right padding. The two are the same computation when:

- the pooling is ``last`` (``mean`` pooling has no Hugging Face counterpart);
- the score layer has no bias, or a zero one: a bias cannot be folded into a linear map of an
  RMS-normalised state, so a head saved with a trained bias (classifiers trained before the head
  became bias-free) is refused rather than silently dropped;
- the exported ``pad_token_id`` is not EOS: our examples end with EOS and we pool it, while HF pools
  the last token that is not pad. When training padded with EOS (a tokenizer without a pad token),
  the export declares another special token of the tokenizer as pad instead (BOS when there is one):
  padded positions are never attended to, so which id fills them does not change our logits.

The exported tokenizer pads on the right with that pad token and appends EOS, because examples are
``[BOS] text EOS``: ``tokenizer(texts, padding=True)`` on the export gives exactly the batches the
classifier was trained and evaluated on. The class name is the causal-LM family's
(``Qwen2ForCausalLM`` -> ``Qwen2ForSequenceClassification``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from llmtrain.errors import CheckpointError
from llmtrain.model.config import ModelConfig
from llmtrain.modelio.hf.tokenizer import GENERATION_CONFIG, export_tokenizer, special_token_ids

CAUSAL_SUFFIX, CLASSIFIER_SUFFIX = "ForCausalLM", "ForSequenceClassification"
_BACKBONE_ONLY = "export the causal-LM backbone alone with `llmtrain export --backbone-only`"


def classifier_problems(score: dict[str, torch.Tensor], head: dict[str, Any], eos_id: int | None,
                        pad_id: int | None = None) -> list[str]:
    """Why this head is not exactly a ``*ForSequenceClassification`` (empty: it is).

    ``pad_id`` is the pad id the export would declare (see :func:`export_pad_id`); None: none found.
    """
    problems = []
    if head.get("pooling", "last") != "last":
        problems.append(f"it pools with {head['pooling']!r}, the Hugging Face class pools the last non-pad token")
    bias = score.get("bias")
    if bias is not None and bool(bias.ne(0).any()):
        problems.append(f"its score layer has a trained bias (max |b| = {float(bias.abs().max()):.3g}) and the "
                        f"Hugging Face score layer has none (classifiers fine-tuned now have no bias: a new fine-tune exports)")
    if pad_id is None:
        problems.append(f"it was trained with pad id {eos_id} = EOS and the tokenizer has no other special token to "
                        f"declare as pad, so the Hugging Face class would pool the token before the final EOS")
    return problems


def export_pad_id(head_pad: int, eos_id: int | None, tokenizer_dir: str | Path | None) -> int | None:
    """The ``pad_token_id`` an export declares: the head's, else (it is EOS) BOS or another special token."""
    if eos_id is None or head_pad != eos_id:
        return head_pad
    ids = special_token_ids(tokenizer_dir)
    candidates = [ids.get("bos_token_id", -1), *_special_added_ids(tokenizer_dir)]
    return next((i for i in candidates if i >= 0 and i != eos_id), None)


def _special_added_ids(tokenizer_dir: str | Path | None) -> list[int]:
    path = Path(tokenizer_dir) / "tokenizer.json" if tokenizer_dir is not None else None
    if path is None or not path.is_file():
        return []
    added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens") or []
    return sorted(int(t["id"]) for t in added if t.get("special"))


def export_sequence_classifier(backbone: dict[str, torch.Tensor], cfg: ModelConfig, score: dict[str, torch.Tensor],
                               head: dict[str, Any], out_dir: str | Path, *, tokenizer_dir: str | Path | None = None,
                               eos_id: int | None = None, dtype: torch.dtype | None = torch.float32,
                               max_shard_size: int | str = "2GB", source_config: dict[str, Any] | None = None) -> Path:
    """Write a ``*ForSequenceClassification`` directory whose logits equal the classifier's.

    ``score`` is the head's state dict (``weight``, optional ``bias``), ``head`` its ``head.json``
    (``label_names`` or ``labels``, ``pooling``, ``pad_id``). Raises CheckpointError, before writing,
    when the head cannot be represented exactly (see :func:`classifier_problems`).
    """
    from llmtrain.modelio.hf import export_hf

    pad_id = export_pad_id(int(head["pad_id"]), eos_id, tokenizer_dir)
    problems = classifier_problems(score, head, eos_id, pad_id)
    if problems:
        raise CheckpointError(f"this classifier cannot be exported as a *{CLASSIFIER_SUFFIX} with equal logits: "
                              f"{'; '.join(problems)}. {_BACKBONE_ONLY[0].upper()}{_BACKBONE_ONLY[1:]} "
                              f"(the head stays in the checkpoint)")
    labels = [str(n) for n in head.get("label_names") or head.get("labels") or range(score["weight"].shape[0])]
    if len(labels) != score["weight"].shape[0]:
        raise CheckpointError(f"head.json names {len(labels)} labels but the score layer has "
                              f"{score['weight'].shape[0]} outputs; the checkpoint is inconsistent")
    assert pad_id is not None  # classifier_problems refused otherwise
    out = export_hf(backbone, cfg, out_dir, tokenizer_dir=tokenizer_dir, dtype=dtype, max_shard_size=max_shard_size,
                    extra_config={"pad_token_id": pad_id}, source_config=as_causal_config(source_config))
    write_score_weights(out, score, dtype, max_shard_size)
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
        _pad_right_with(out, pad_id)
    return out


def _pad_right_with(out: Path, pad_id: int) -> None:
    """Make the exported tokenizer pad on the right with ``pad_id``, the config's ``pad_token_id``."""
    from tokenizers import Tokenizer as FastTokenizer
    from transformers import AutoTokenizer

    config_path = out / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config["padding_side"] = "right"
    if (out / "tokenizer.json").is_file():
        name = FastTokenizer.from_file(str(out / "tokenizer.json")).id_to_token(pad_id)
        if name is not None:
            config["pad_token"] = name
            special_map = out / "special_tokens_map.json"
            if special_map.is_file():
                tokens = json.loads(special_map.read_text())
                special_map.write_text(json.dumps({**tokens, "pad_token": name}, indent=2, ensure_ascii=False) + "\n")
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    if "pad_token" not in config:
        return  # a bare SentencePiece model: nothing transformers loads to check against
    tok = AutoTokenizer.from_pretrained(str(out))
    if tok.pad_token_id != pad_id or tok.padding_side != "right":
        raise CheckpointError(f"the exported tokenizer in {out} pads on the {tok.padding_side} with id "
                              f"{tok.pad_token_id}, but the classifier needs right padding with pad_token_id "
                              f"{pad_id}; this is a bug in llmtrain's export, please report it")


def is_sequence_classifier(source: dict[str, Any] | None) -> bool:
    """Whether a Hugging Face ``config.json`` describes a ``*ForSequenceClassification``."""
    return bool(source) and str((source.get("architectures") or [""])[0]).endswith(CLASSIFIER_SUFFIX)


def as_causal_config(source: dict[str, Any] | None) -> dict[str, Any] | None:
    """A classifier's ``config.json`` as its backbone's ``*ForCausalLM`` config (others unchanged)."""
    if source is None or not is_sequence_classifier(source):
        return source
    arch = source["architectures"][0].removesuffix(CLASSIFIER_SUFFIX) + CAUSAL_SUFFIX
    return {k: v for k, v in source.items() if k not in ("id2label", "label2id", "problem_type")} | {"architectures": [arch]}


def classifier_head(source: dict[str, Any] | None, num_labels: int) -> dict[str, Any]:
    """``head.json`` of an imported ``*ForSequenceClassification`` (labels from ``id2label``, last-token pooling)."""
    id2label = {str(k): str(v) for k, v in (source or {}).get("id2label", {}).items()}
    head: dict[str, Any] = {"task": "classification", "pooling": "last",
                            "labels": [id2label.get(str(i), f"LABEL_{i}") for i in range(num_labels)]}
    if (source or {}).get("pad_token_id") is not None:
        head["pad_id"] = int(source["pad_token_id"])  # type: ignore[index]
    return head


def import_hf_dir(hf_dir: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """:func:`~llmtrain.modelio.hf.import_hf`, also for a ``*ForSequenceClassification`` directory.

    A classifier's weights are its backbone plus ``score.weight``. It has no LM head of its own, so its
    backbone is read with tied embeddings (the output projection is the embedding, which the classifier
    never uses; a ``--backbone-only`` export of it is a causal LM with that tied head).
    """
    from llmtrain.modelio.hf import import_hf, read_hf_weights
    from llmtrain.modelio.hf.families import model_config_from_hf
    from llmtrain.modelio.hf.keys import from_hf_state_dict

    path = Path(hf_dir)
    source = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
    if not is_sequence_classifier(source):
        return import_hf(path)
    assert source is not None
    weights = read_hf_weights(path)
    if "score.weight" not in weights or any(k.startswith("score.") and k != "score.weight" for k in weights):
        raise CheckpointError(f"{path} says {source['architectures'][0]} but its weights hold "
                              f"{sorted(k for k in weights if k.startswith('score.'))} instead of one bias-free "
                              f"score.weight; the weight files do not belong to this config")
    score = weights.pop("score.weight")
    causal = as_causal_config(source) or {}
    cfg = model_config_from_hf({**causal, "tie_word_embeddings": True}, name=source.get("_name_or_path") or path.name)
    return cfg, {**from_hf_state_dict(weights, cfg), "score.weight": score}


def write_score_weights(out: Path, score: dict[str, torch.Tensor], dtype: torch.dtype | None,
                        max_shard_size: int | str) -> None:
    """Rewrite the causal-LM export in ``out`` as a sequence classifier's weights: ``lm_head`` dropped,
    ``score.weight`` added (the same shards layout, old weight files replaced)."""
    from llmtrain.modelio.hf import read_hf_weights, save_safetensors

    weights = {k: v for k, v in read_hf_weights(out).items() if not k.startswith("lm_head.")}
    weights["score.weight"] = score["weight"].to(dtype or score["weight"].dtype)
    for old in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        old.unlink()
    save_safetensors(weights, out, max_shard_size)
