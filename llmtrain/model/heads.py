"""Task heads on top of the transformer backbone.

:class:`SequenceClassifier` pools the backbone's final-normed hidden states (the last non-pad
token, as Llama-for-sequence-classification does, or the mean over non-pad tokens) and applies one
linear layer ``score``. Its state dict is the backbone's under ``backbone.`` plus ``score.weight``,
so a checkpoint of a classifier carries the head by name.

The score layer has no bias, like Hugging Face's ``*ForSequenceClassification.score``: a bias cannot
be folded into the weight of a linear map on an RMS-normalised state, so a head with one would have
no exact Hugging Face counterpart. ``bias=True`` rebuilds classifiers saved with a ``score.bias``.
"""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("last", "mean")


class SequenceClassifier(nn.Module):
    """Backbone + pooling + linear head; ``forward(tokens) -> logits [B, num_labels]``."""

    def __init__(self, backbone: nn.Module, num_labels: int, *, pooling: str = "last", pad_id: int = 0,
                 bias: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: {pooling!r} is not one of {POOLINGS}")
        if num_labels < 2:
            raise ValueError(f"num_labels: a classifier needs at least 2 labels, got {num_labels}")
        self.backbone = backbone
        self.pooling = pooling
        self.pad_id = pad_id
        self.num_labels = num_labels
        dim = backbone.cfg.dim  # not the embedding's shape: a ZeRO-3 partition is an empty placeholder
        self.score = nn.Linear(dim, num_labels, bias=bias)
        # Small init: the head starts near uniform predictions instead of a random confident guess.
        nn.init.normal_(self.score.weight, std=0.02)
        if self.score.bias is not None:
            nn.init.zeros_(self.score.bias)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, D] with right padding; ``attention_mask`` is 1 on real tokens."""
        mask = attention_mask.to(hidden.dtype)
        if self.pooling == "mean":
            return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
        last = (attention_mask.long().sum(1) - 1).clamp_min(0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = tokens.ne(self.pad_id)
        hidden = self.backbone(tokens, return_hidden=True)
        pooled = self.pool(hidden, attention_mask)
        return self.score(pooled.to(self.score.weight.dtype))

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Just the head (``score.weight``, and ``score.bias`` if it has one), e.g. to save beside a backbone."""
        return {f"score.{k}": v for k, v in self.score.state_dict().items()}
