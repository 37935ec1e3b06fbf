"""Supervised fine-tuning: next-token loss on the responses of prompt/response (or chat) records.

Records are rendered with the tokenizer's Jinja chat template when it has one, else with
``finetune.chat_template``, and labelled on assistant turns only (:mod:`llmtrain.data.sft`); training
rows may be packed with document masking. The tokenizer's template travels with its files; a format
string is saved into every checkpoint (``chat_template.txt`` for generation, ``chat_template.jinja``
for Hugging Face users) so prompts are formatted exactly as training did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmtrain.config.roots import EvalRunConfig
from llmtrain.config.schema import FinetuneConfig
from llmtrain.data.chat import JINJA_TEMPLATE_FILE, format_to_jinja, tokenizer_template
from llmtrain.data.finetune_loader import eval_batches
from llmtrain.data.finetune_sets import SPLITS, Records
from llmtrain.data.sft import TextTokenizer, encode_sft, pack_examples
from llmtrain.errors import DataError
from llmtrain.eval.perplexity import lm_loss
from llmtrain.modelio.layout import CHAT_TEMPLATE_FILE
from llmtrain.modelio.load import LoadedModel
from llmtrain.objectives.base import EncodedData, register
from llmtrain.objectives.finetune_common import FinetuneObjective
from llmtrain.objectives.losses import causal_lm_loss
from llmtrain.training.task import Batch


@dataclass
class SftData(EncodedData):
    chat_template: str | None = None  # the format string, when it (not the tokenizer's template) was used
    jinja_template: str | None = None  # the same format as a Jinja chat template, for Hugging Face users
    template_source: str = "finetune.chat_template"

    def summary(self) -> str:
        return f"{super().summary()}; chat format from {self.template_source}"


@register
class Sft(FinetuneObjective):
    """Prompt -> response language modelling, loss on response tokens (and their EOS) only."""

    name = "sft"

    def encode(self, records: Records, ft: FinetuneConfig, tokenizer: TextTokenizer, *, seq_len: int) -> SftData:
        splits = {s: encode_sft(records[s], tokenizer, ft.chat_template, seq_len, layout=ft.record_format,
                                prompt_field=ft.prompt_field, response_field=ft.response_field,
                                messages_field=ft.messages_field) for s in SPLITS}
        if ft.packing:
            # Only training rows are packed; held-out splits stay one example per row so their loss is
            # comparable between packed and unpacked runs.
            splits["train"] = pack_examples(splits["train"], seq_len)
        if not splits["train"]:
            raise DataError(f"no SFT example of {ft.dataset!r} fits in seq_len {seq_len}; raise train.seq_len")
        if tokenizer_template(tokenizer) is not None:
            # the tokenizer's own template rendered the data and travels with its files: no format string
            return SftData(splits, records, chat_template=None, template_source="tokenizer")
        jinja = format_to_jinja(ft.chat_template, add_bos=bool(tokenizer.bos_prefix))
        return SftData(splits, records, chat_template=ft.chat_template, jinja_template=jinja)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return causal_lm_loss(model, batch)

    def metrics(self, model: nn.Module, batches: Iterable[Batch], data: EncodedData, device: torch.device, *,
                reduce: bool) -> dict[str, float]:
        m = lm_loss(model, batches, device, reduce=reduce)
        return {"loss": m["loss"], "ppl": m["ppl"]}

    def export_files(self, data: EncodedData) -> dict[str, str]:
        if not isinstance(data, SftData) or not data.chat_template:
            return {}
        files = {CHAT_TEMPLATE_FILE: data.chat_template}
        if data.jinja_template:
            files[JINJA_TEMPLATE_FILE] = data.jinja_template
        return files

    def evaluate(self, loaded: LoadedModel, cfg: EvalRunConfig, *, device: torch.device) -> dict[str, Any]:
        """``{"sft": {split: loss/ppl/tokens}}`` over every held-out split of ``cfg.finetune.dataset``."""
        data = self.eval_data(loaded, cfg)
        if data is None:
            return {}
        tok = loaded.tokenizer
        pad = tok.pad_id if tok.pad_id >= 0 else 0
        mb = cfg.train.micro_batch_size
        return {"sft": {s: lm_loss(loaded.model, eval_batches(ex, micro_batch_size=mb, pad_id=pad,
                                                              collate_fn=self.collate), device)
                        for s, ex in data.splits.items() if s != "train" and ex}}
