"""Loss functions the one training loop calls, chosen by the fine-tuning task.

Batches follow the loader contract: ``input_ids`` [B, T], ``labels`` [B, T] already aligned with the
positions (``labels[:, t]`` is the token to predict after ``input_ids[:, :t+1]``; -100 = ignored),
optional ``doc_ids`` for packed sequences, ``attention_mask`` and ``class_labels`` [B] for
classification.

The language-model loss never builds the fp32 logits of the whole batch (B·T·V floats dominate
memory for large vocabularies): it takes the final hidden states and runs the output projection and
cross-entropy over chunks of tokens, upcasting one chunk at a time. Each chunk is checkpointed, so
backward recomputes that chunk's logits instead of keeping all of them alive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
DEFAULT_CHUNK_TOKENS = 4096


def _chunk_ce_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")


def _is_zero3_partitioned(weight: torch.Tensor) -> bool:
    """DeepSpeed ZeRO-3 keeps only a shard of each parameter outside its module's forward."""
    return hasattr(weight, "ds_id")


def chunked_cross_entropy_sum(hidden: torch.Tensor, output: nn.Module, labels: torch.Tensor,
                              chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """Sum of token cross-entropies of ``output(hidden)`` against ``labels`` (flat [N, D] / [N]).

    Outside ZeRO-3 each chunk is a checkpointed ``F.linear`` + fp32 cross-entropy against
    ``output.weight``. Under ZeRO-3 the weight is sharded, so the chunks call the ``output`` module
    itself, which lets DeepSpeed gather the weight on each call (no recompute in that case).
    """
    keep = labels.ne(IGNORE_INDEX)
    hidden, labels = hidden[keep], labels[keep]  # prompt/padding tokens cost nothing
    total = hidden.new_zeros((), dtype=torch.float32)
    if labels.numel() == 0:
        # Keep the graph connected so every rank runs the same backward collectives.
        return total + 0.0 * hidden.sum() + 0.0 * sum(p.sum() for p in output.parameters())
    sharded = _is_zero3_partitioned(output.weight)
    for start in range(0, labels.numel(), chunk_tokens):
        h, y = hidden[start:start + chunk_tokens], labels[start:start + chunk_tokens]
        if sharded:
            total = total + F.cross_entropy(output(h).float(), y, ignore_index=IGNORE_INDEX, reduction="sum")
        elif torch.is_grad_enabled():
            total = total + checkpoint(_chunk_ce_sum, h, output.weight, y, use_reentrant=False)
        else:
            total = total + _chunk_ce_sum(h, output.weight, y)
    return total


def causal_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor], *,
                   chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token loss over the labelled tokens of ``batch`` and their count.

    Used for pretraining and SFT alike: SFT batches mark prompt and padding labels -100, so the
    mean runs over response tokens (and their EOS) only. Returns ``(loss, n_tokens)``; ``loss`` is
    0 with a connected graph when nothing is labelled.
    """
    hidden = model(batch["input_ids"], doc_ids=batch.get("doc_ids"), return_hidden=True)
    labels = batch["labels"]
    total = chunked_cross_entropy_sum(hidden.reshape(-1, hidden.shape[-1]), model.output,
                                      labels.reshape(-1), chunk_tokens)
    n_tokens = labels.ne(IGNORE_INDEX).sum()
    return total / n_tokens.clamp_min(1), n_tokens


def classification_loss(classifier: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of a :class:`SequenceClassifier` on ``class_labels``; returns (loss, n)."""
    logits = classifier(batch["input_ids"], attention_mask=batch.get("attention_mask"))
    labels = batch["class_labels"]
    return F.cross_entropy(logits.float(), labels), torch.tensor(labels.numel(), device=labels.device)


def loss_for_task(task: str):
    """The loss function for ``finetune.task`` (``sft`` or ``classification``); pretraining = sft's."""
    if task == "classification":
        return classification_loss
    if task in ("sft", "pretrain"):
        return causal_lm_loss
    raise ValueError(f"unknown task {task!r}; expected sft, classification or pretrain")
