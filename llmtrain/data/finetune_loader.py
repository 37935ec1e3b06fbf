"""Batches of tokenized fine-tuning examples with the pretraining loader's contract.

The trainer sees the same interface for pretraining and fine-tuning: ``next_batch()`` returns a
dict of LongTensors (``input_ids``, ``labels`` pre-shifted with -100 = ignored, ``attention_mask``,
``doc_ids`` for packed rows, ``class_labels`` for classification), ``micro_steps_per_step`` micro
batches make one optimizer step, and ``state_dict()``/``load_state_dict()`` hold one number,
``consumed_samples``, counted over all data-parallel ranks.

Sample order is a pure function of (seed, global sample index): global index g is position
``g % N`` of epoch ``g // N``'s permutation (``torch.randperm`` seeded with seed + epoch), and
which global indices a rank reads when is :class:`GlobalBatchSampler`'s rule, shared with
pretraining, so resuming, or resuming on another data-parallel size, continues with exactly the
samples an uninterrupted run would have used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from llmtrain.data.sampler import GlobalBatchSampler
from llmtrain.data.sft import IGNORE_INDEX

Collate = Callable[..., dict[str, torch.Tensor]]  # (samples, pad_id, pad_to=...) -> batch


def collate(samples: Sequence[dict[str, Any]], pad_id: int, *, pad_to: int | None = None,
            multiple_of: int = 8) -> dict[str, torch.Tensor]:
    """Right-pad samples to the longest (rounded up to ``multiple_of``, at most ``pad_to``).

    Only the keys every objective shares; an objective's own keys (class labels) are added by its
    ``collate``, passed to the iterators below as ``collate_fn``.
    """
    longest = max(len(s["input_ids"]) for s in samples)
    T = -(-longest // multiple_of) * multiple_of
    if pad_to is not None:
        T = min(max(T, longest), max(pad_to, longest))
    B = len(samples)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    docs = torch.zeros((B, T), dtype=torch.long) if "doc_ids" in samples[0] else None
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[i, :n] = torch.tensor(s["input_ids"])
        labels[i, :n] = torch.tensor(s["labels"])
        mask[i, :n] = 1
        if docs is not None:
            docs[i, :n] = torch.tensor(s["doc_ids"])
            docs[i, n:] = (s["doc_ids"][-1] + 1) if n else 0  # padding is its own document
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    if docs is not None:
        batch["doc_ids"] = docs
    return batch


class FinetuneBatchIterator:
    """Stateful, data-parallel-aware, epoch-shuffled batches over a list of tokenized examples."""

    def __init__(self, dataset: Sequence[dict[str, Any]], *, seq_len: int, micro_batch_size: int,
                 global_batch_size: int, dp_rank: int, dp_size: int, seed: int, pad_id: int,
                 collate_fn: Collate = collate):
        if not len(dataset):
            raise ValueError("the fine-tuning training split is empty; check finetune.dataset")
        self.sampler = GlobalBatchSampler(micro_batch_size=micro_batch_size, global_batch_size=global_batch_size,
                                          dp_rank=dp_rank, dp_size=dp_size)
        self.dataset, self.seq_len, self.pad_id, self.seed = dataset, seq_len, pad_id, seed
        self.collate_fn = collate_fn
        self.micro_batch_size, self.global_batch_size = micro_batch_size, global_batch_size
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.micro_steps_per_step = self.sampler.micro_steps_per_step
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.dataset)

    def _sample_index(self, g: int) -> int:
        n = len(self.dataset)
        epoch = g // n
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._perm, self._perm_epoch = torch.randperm(n, generator=gen), epoch
        return int(self._perm[g % n])

    @property
    def consumed_samples(self) -> int:
        """Global samples (over all ranks) of finished optimizer steps."""
        return self.sampler.consumed_samples

    @property
    def epoch(self) -> float:
        return self.sampler.position / len(self.dataset)

    def next_batch(self) -> dict[str, torch.Tensor]:
        """This rank's next micro batch (``consumed_samples`` grows by G after the step's last one)."""
        samples = [self.dataset[self._sample_index(g)] for g in self.sampler.next_indices()]
        return self.collate_fn(samples, self.pad_id, pad_to=self.seq_len)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {**self.sampler.state_dict(), "seed": self.seed, "num_samples": len(self.dataset)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


def eval_batches(dataset: Sequence[dict[str, Any]], *, micro_batch_size: int, pad_id: int, dp_rank: int = 0,
                 dp_size: int = 1, seq_len: int | None = None,
                 collate_fn: Collate = collate) -> Iterator[dict[str, torch.Tensor]]:
    """One ordered pass over a held-out split, rank r taking examples r, r+dp, ... (no repeats).

    Every rank yields the same number of batches (ZeRO-3 forwards are collective): ranks with fewer
    examples fill up with copies whose labels are -100 and whose ``valid`` entry is 0.
    """
    mine = [dict(dataset[i], valid=1) for i in range(dp_rank, len(dataset), dp_size)]
    per_rank = -(-len(dataset) // dp_size)
    if mine and len(mine) < per_rank:
        filler = dict(mine[0], valid=0, labels=[IGNORE_INDEX] * len(mine[0]["labels"]))
        mine += [filler] * (per_rank - len(mine))
    for start in range(0, len(mine), micro_batch_size):
        chunk = mine[start:start + micro_batch_size]
        batch = collate_fn(chunk, pad_id, pad_to=seq_len)
        batch["valid"] = torch.tensor([s["valid"] for s in chunk], dtype=torch.long)
        yield batch
