"""Sequence classification: a linear head on the pooled backbone, cross-entropy on class labels.

Records are ``BOS text EOS`` with a label mapped to an index (:mod:`llmtrain.data.classification`).
The head's label names, pooling and pad id go into ``head.json`` beside the weights, so
``load_model`` can rebuild the classifier and reports can name the classes. Held-out metrics are
accuracy and macro-F1; ``llmtrain eval`` puts them beside a majority and a TF-IDF baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from llmtrain.config.roots import EvalRunConfig
from llmtrain.config.schema import FinetuneConfig
from llmtrain.data.classification import encode_classification, label_names
from llmtrain.data.finetune_loader import eval_batches
from llmtrain.data.finetune_sets import RT_LABELS, SPLITS, Records
from llmtrain.data.sft import TextTokenizer
from llmtrain.eval.baselines import classification_baselines
from llmtrain.eval.classification import evaluate_classifier
from llmtrain.model.heads import SequenceClassifier
from llmtrain.modelio.load import LoadedModel
from llmtrain.objectives.base import EncodedData, Example, register
from llmtrain.objectives.finetune_common import FinetuneObjective
from llmtrain.objectives.losses import classification_loss
from llmtrain.training.task import Batch


@dataclass
class ClassificationData(EncodedData):
    label_names: list[str] = field(default_factory=list)
    text_field: str = "text"
    label_field: str = "label"

    def summary(self) -> str:
        return f"{super().summary()}; labels {self.label_names}"


@register
class Classification(FinetuneObjective):
    """One label per text, predicted by a linear head on the backbone's pooled hidden states."""

    name = "classification"

    def encode(self, records: Records, ft: FinetuneConfig, tokenizer: TextTokenizer, *,
               seq_len: int) -> ClassificationData:
        # The named set has fixed columns and label names (0 rotten, 1 fresh), whatever the config says.
        named = ft.dataset == "rotten_tomatoes"
        text_field, label_field = ("text", "label") if named else (ft.text_field, ft.label_field)
        names = list(RT_LABELS) if named and not ft.labels else label_names(records["train"], label_field, ft.labels)
        splits = {s: encode_classification(records[s], tokenizer, names, text_field=text_field,
                                           label_field=label_field, seq_len=seq_len) for s in SPLITS}
        return ClassificationData(splits, records, label_names=names, text_field=text_field, label_field=label_field)

    def collate(self, samples: Sequence[Example], pad_id: int, pad_to: int | None = None) -> Batch:
        batch = super().collate(samples, pad_id, pad_to)
        batch["class_labels"] = torch.tensor([s["class_label"] for s in samples], dtype=torch.long)
        return batch

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return classification_loss(model, batch)

    def build_model(self, backbone: nn.Module, data: EncodedData, ft: FinetuneConfig, *, pad_id: int,
                    seed: int) -> tuple[nn.Module, dict[str, Any] | None]:
        names = _names(data)
        torch.manual_seed(seed)  # the same head init on every rank
        head = {"labels": names, "pooling": ft.pooling, "pad_id": pad_id, "task": self.name}
        return SequenceClassifier(backbone, len(names), pooling=ft.pooling, pad_id=pad_id), head

    def metrics(self, model: nn.Module, batches: Iterable[Batch], data: EncodedData, device: torch.device, *,
                reduce: bool) -> dict[str, float]:
        names = _names(data)
        m = evaluate_classifier(model, batches, device, len(names), names, reduce=reduce)
        return {k: v for k, v in m.items() if k in ("accuracy", "macro_f1")}

    def evaluate(self, loaded: LoadedModel, cfg: EvalRunConfig, *, device: torch.device) -> dict[str, Any]:
        """Accuracy/F1 of the loaded classifier on the test split (else validation), beside the baselines."""
        if loaded.classifier is None:
            return {}
        data = self.eval_data(loaded, cfg)
        if not isinstance(data, ClassificationData):
            return {}
        split = "test" if data.splits["test"] else "validation"
        tok = loaded.tokenizer
        pad = tok.pad_id if tok.pad_id >= 0 else 0
        batches = eval_batches(data.splits[split], micro_batch_size=cfg.train.micro_batch_size, pad_id=pad,
                               collate_fn=self.collate)
        names = data.label_names
        ours = evaluate_classifier(loaded.classifier, batches, device, len(names), names)
        base = classification_baselines(data.records["train"], data.records[split], text_field=data.text_field,
                                        label_field=data.label_field, label_names=names)
        return {"classification": {"fine-tuned": ours, **base},
                "classification_task": f"{cfg.finetune.dataset} ({split} split)"}


def _names(data: EncodedData) -> list[str]:
    if not isinstance(data, ClassificationData):
        raise TypeError(f"the classification objective got {type(data).__name__}, not ClassificationData")
    return data.label_names
