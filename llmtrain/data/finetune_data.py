"""From a ``finetune:`` config section to tokenized train/validation/test splits.

This is the one function the fine-tuning entry point calls for data: it reads the records
(:mod:`llmtrain.data.finetune_sets`), tokenizes them for the task (:mod:`llmtrain.data.sft`,
:mod:`llmtrain.data.classification`) and returns them with what must be saved beside the model
(label names, chat template). Wrap ``train`` in :class:`FinetuneBatchIterator` for training and use
:func:`eval_batches` over ``validation``/``test``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmtrain.config.schema import FinetuneConfig
from llmtrain.data.classification import encode_classification, label_names
from llmtrain.data.finetune_sets import RT_LABELS, SPLITS, Records, load_records
from llmtrain.data.sft import TextTokenizer, encode_sft, pack_examples
from llmtrain.errors import DataError


@dataclass
class FinetuneData:
    task: str
    splits: dict[str, list[dict[str, Any]]]
    records: Records
    label_names: list[str] = field(default_factory=list)
    chat_template: str | None = None
    text_field: str = "text"
    label_field: str = "label"

    def summary(self) -> str:
        sizes = ", ".join(f"{s} {len(v)}" for s, v in self.splits.items())
        labels = f"; labels {self.label_names}" if self.label_names else ""
        return f"{self.task} examples: {sizes}{labels}"


def build_finetune_data(ft: FinetuneConfig, tokenizer: TextTokenizer, *, seq_len: int) -> FinetuneData:
    """Tokenized splits for ``ft.task`` from ``ft.dataset`` (identical on every rank)."""
    if not ft.dataset:
        raise DataError("finetune.dataset is empty; set it to a named set (rotten_tomatoes, chatterbot) or a .jsonl/.csv path")
    records = load_records(ft.dataset, ft.validation_fraction)
    if ft.task == "classification":
        # The named set has fixed columns and label names (0 rotten, 1 fresh), whatever the config says.
        named = ft.dataset == "rotten_tomatoes"
        text_field, label_field = ("text", "label") if named else (ft.text_field, ft.label_field)
        names = list(RT_LABELS) if named and not ft.labels else label_names(records["train"], label_field, ft.labels)
        splits = {s: encode_classification(records[s], tokenizer, names, text_field=text_field,
                                           label_field=label_field, seq_len=seq_len) for s in SPLITS}
        return FinetuneData("classification", splits, records, label_names=names, text_field=text_field,
                            label_field=label_field)
    splits = {s: encode_sft(records[s], tokenizer, ft.chat_template, seq_len) for s in SPLITS}
    if ft.packing:
        # Only training rows are packed; held-out splits stay one example per row so their loss is
        # comparable between packed and unpacked runs.
        splits["train"] = pack_examples(splits["train"], seq_len)
    if not splits["train"]:
        raise DataError(f"no SFT example of {ft.dataset!r} fits in seq_len {seq_len}; raise train.seq_len")
    return FinetuneData("sft", splits, records, chat_template=ft.chat_template)
