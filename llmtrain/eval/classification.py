"""Accuracy and macro-F1 of a sequence classifier over held-out batches (data-parallel aware).

Predictions are accumulated into a confusion matrix, which is summed over ranks, so every rank
returns the same numbers and no rank ships its predictions anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn


def confusion_matrix(y_true: Iterable[int], y_pred: Iterable[int], num_labels: int) -> torch.Tensor:
    """[num_labels, num_labels] counts, rows = true label, columns = prediction."""
    cm = torch.zeros(num_labels, num_labels, dtype=torch.long)
    for t, p in zip(y_true, y_pred, strict=True):
        cm[int(t), int(p)] += 1
    return cm


def metrics_from_confusion(cm: torch.Tensor, label_names: list[str] | None = None) -> dict[str, float]:
    """accuracy, macro_f1 (F1 averaged over classes, 0 for a class never predicted nor present) and per-class F1."""
    cm = cm.double()
    tp = cm.diag()
    precision_den, recall_den = cm.sum(0), cm.sum(1)
    f1 = torch.where(precision_den + recall_den > 0, 2 * tp / (precision_den + recall_den).clamp_min(1e-12),
                     torch.zeros_like(tp))
    total = cm.sum()
    out = {"accuracy": float(tp.sum() / total) if total > 0 else 0.0, "macro_f1": float(f1.mean()), "n": int(total)}
    names = label_names or [str(i) for i in range(cm.shape[0])]
    out.update({f"f1/{n}": float(v) for n, v in zip(names, f1.tolist(), strict=True)})
    return out


def classification_metrics(y_true: Iterable[int], y_pred: Iterable[int], num_labels: int,
                           label_names: list[str] | None = None) -> dict[str, float]:
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, num_labels), label_names)


@torch.no_grad()
def evaluate_classifier(classifier: nn.Module, batches: Iterable[dict[str, torch.Tensor]], device: torch.device,
                        num_labels: int, label_names: list[str] | None = None, *, reduce: bool = True) -> dict[str, float]:
    """Metrics of ``classifier`` over ``batches`` (from ``eval_batches``; ``valid`` = 0 rows skipped).

    ``reduce`` sums the confusion matrix over ranks; pass False when every rank saw the whole split.
    """
    was_training = classifier.training
    classifier.eval()
    cm = torch.zeros(num_labels, num_labels, dtype=torch.long, device=device)
    for batch in batches:
        logits = classifier(batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        pred, true = logits.argmax(-1), batch["class_labels"].to(device)
        keep = batch["valid"].to(device).bool() if "valid" in batch else torch.ones_like(true, dtype=torch.bool)
        cm.index_put_((true[keep], pred[keep]), torch.ones_like(true[keep]), accumulate=True)
    if reduce and dist.is_initialized():
        dist.all_reduce(cm)
    classifier.train(was_training)
    return metrics_from_confusion(cm.cpu(), label_names)
