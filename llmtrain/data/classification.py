"""Sequence-classification examples: ``BOS text EOS`` with an integer class label.

The EOS at the end gives "last" pooling a fixed token to read the sentence summary from,
whatever the text's own last token is. Labels are mapped to indices by ``finetune.labels`` (or the
sorted distinct labels of the training split), so the mapping is saved with the model and the same
on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmtrain.data.record_layouts import ORIGIN_KEY, where_of
from llmtrain.data.sft import IGNORE_INDEX, TextTokenizer
from llmtrain.errors import DataError


def label_names(train: Sequence[dict[str, Any]], label_field: str, given: list[str] | None) -> list[str]:
    """Label names in index order: ``given``, else the sorted distinct values of the train split."""
    if given:
        return list(given)
    values = {str(r[label_field]) for r in train if label_field in r}
    if len(values) < 2:
        raise DataError(f"classification needs >= 2 distinct values in column {label_field!r}; found {sorted(values)}. "
                        f"Check finetune.label_field")
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)


def label_index(value: Any, names: list[str], where: str = "a record") -> int:
    """Index of ``value``: its name, or an integer index into ``names``; DataError naming ``where`` otherwise."""
    s = str(value)
    if s in names:
        return names.index(s)
    if s.lstrip("-").isdigit() and 0 <= int(s) < len(names):
        return int(s)
    raise DataError(f"{where}: label {value!r} is not one of {names}; fix the data or finetune.labels")


def encode_classification(records: Sequence[dict[str, Any]], tokenizer: TextTokenizer, names: list[str], *,
                          text_field: str, label_field: str, seq_len: int) -> list[dict[str, Any]]:
    """``input_ids`` (truncated to ``seq_len``, EOS kept) and ``class_label`` for each record."""
    out = []
    for n, r in enumerate(records):
        if text_field not in r or label_field not in r:
            raise DataError(f"{where_of(r, n)} has fields {sorted(k for k in r if k != ORIGIN_KEY)}; expected "
                            f"{text_field!r} and {label_field!r} (set finetune.text_field / finetune.label_field)")
        bos = tokenizer.bos_prefix
        ids = bos + tokenizer.encode(str(r[text_field]))[: seq_len - 1 - len(bos)] + [tokenizer.eos_id]
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * len(ids), "class_label": label_index(r[label_field], names, where_of(r, n))})
    return out
