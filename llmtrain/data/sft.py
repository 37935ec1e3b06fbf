"""Supervised fine-tuning examples: chat template, assistant-only labels, optional packing.

Rows of any layout (:mod:`llmtrain.data.record_layouts`: prompt/response, OpenAI messages, ShareGPT,
Alpaca) become a prompt/response pair or a conversation. Training uses each example pre-shifted
(``input_ids = seq[:-1]``, ``labels = seq[1:]``) with labels -100 wherever the assistant is not
speaking, so the loss covers assistant content and its end token only.

- A tokenizer with a Jinja chat template (Llama-3, Qwen, ...) renders every record with it and
  every assistant turn is trained (:func:`llmtrain.data.chat.template_conversation`); the template
  travels with the tokenizer files into checkpoints and exports.
- Otherwise ``finetune.chat_template`` (``{prompt}`` = the user's text) is the format: a pair is
  ``BOS template(prompt) response EOS``; a conversation is ``BOS [system "\n"] template(user)
  assistant EOS ...`` with every assistant turn trained. The format string is saved with the model
  (``llmtrain.modelio.layout.CHAT_TEMPLATE_FILE``) so generation formats prompts as training did,
  and as an equivalent Jinja template (:func:`llmtrain.data.chat.format_to_jinja`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from llmtrain.data.chat import (
    IGNORE_INDEX,
    format_conversation,
    shifted_window,
    template_conversation,
    tokenizer_template,
)
from llmtrain.data.record_layouts import sft_record, where_of
from llmtrain.errors import DataError

__all__ = ["IGNORE_INDEX", "encode_example", "encode_sft", "pack_examples", "prompt_and_response"]


class TextTokenizer(Protocol):
    bos_id: int
    eos_id: int
    pad_id: int

    @property
    def bos_prefix(self) -> list[int]:
        """``[bos_id]``, or ``[]`` for a tokenizer whose sequences start without BOS (Qwen)."""
        ...

    def encode(self, text: str) -> list[int]: ...


def render_template(template: str, prompt: str) -> str:
    """The template with ``{prompt}`` replaced (plain replace: braces in user text are safe)."""
    if "{prompt}" not in template:
        raise DataError(f"finetune.chat_template {template!r} has no {{prompt}} placeholder; add one")
    return template.replace("{prompt}", prompt)


def prompt_and_response(record: dict[str, Any], template: str) -> tuple[str, str]:
    """The rendered prompt side and the response text of one SFT record."""
    if "prompt" in record and "response" in record:
        return render_template(template, str(record["prompt"])), str(record["response"])
    msgs = record.get("messages")
    if not msgs or not isinstance(msgs, list):
        raise DataError(f"SFT record {str(record)[:120]!r} has neither prompt/response nor messages; "
                        f"write {{\"prompt\": ..., \"response\": ...}} or {{\"messages\": [{{\"role\", \"content\"}}...]}}")
    if msgs[-1].get("role") != "assistant":
        raise DataError(f"SFT record's last message has role {msgs[-1].get('role')!r}; it must be the assistant's reply")
    parts = []
    for m in msgs[:-1]:
        role, content = m.get("role"), str(m.get("content", ""))
        if role == "system":
            parts.append(content + "\n")
        elif role == "user":
            parts.append(render_template(template, content))
        else:
            parts.append(content + "\n")
    return "".join(parts), str(msgs[-1]["content"])


def encode_example(tokenizer: TextTokenizer, prompt: str, response: str, seq_len: int) -> dict[str, list[int]] | None:
    """Pre-shifted ``input_ids``/``labels`` of at most ``seq_len`` tokens; None if no response fits.

    Too-long examples keep the response (up to half the window, longer if the prompt is short) and
    the end of the prompt, which is the part nearest the answer.
    """
    bos = tokenizer.bos_prefix
    p = bos + tokenizer.encode(prompt)
    r = tokenizer.encode(response) + [tokenizer.eos_id]
    budget = seq_len + 1
    if len(p) + len(r) > budget:
        r = r[: max(budget - len(p), budget // 2)]
        keep = budget - len(r) - len(bos)
        p = bos + (p[len(bos):][-keep:] if keep > 0 else [])
        r = r[: budget - len(p)]
    if not r or len(p) + len(r) < 2:
        return None
    seq = p + r
    # without BOS and prompt, the first response token is context only (nothing before it predicts it)
    labels = [IGNORE_INDEX] * (len(p) - 1) + r if p else r[1:]
    return {"input_ids": seq[:-1], "labels": labels}


def encode_sft(records: Sequence[dict[str, Any]], tokenizer: TextTokenizer, template: str, seq_len: int, *,
               layout: str = "auto", prompt_field: str = "prompt", response_field: str = "response",
               messages_field: str | None = None) -> list[dict[str, list[int]]]:
    """Encode every record (any layout of :mod:`llmtrain.data.record_layouts`); records that cannot fit are dropped.

    With a tokenizer chat template every record is a conversation rendered by it (a prompt/response
    pair is one user and one assistant message); without one, prompt/response pairs use
    :func:`encode_example` and conversations :func:`llmtrain.data.chat.format_conversation`.
    """
    jinja = tokenizer_template(tokenizer)
    out = []
    for n, row in enumerate(records):
        where = where_of(row, n)
        rec = sft_record(row, where, layout=layout, prompt_field=prompt_field, response_field=response_field,
                         messages_field=messages_field)
        if jinja is None and "prompt" in rec:
            ex = encode_example(tokenizer, render_template(template, rec["prompt"]), rec["response"], seq_len)
        else:
            msgs = rec.get("messages") or [{"role": "user", "content": rec["prompt"]},
                                           {"role": "assistant", "content": rec["response"]}]
            ids, mask = (template_conversation(tokenizer, msgs, where) if jinja is not None  # type: ignore[arg-type]
                         else format_conversation(tokenizer, msgs, template))  # type: ignore[arg-type]
            ex = shifted_window(ids, mask, seq_len)
        if ex is not None:
            out.append(ex)
    return out


def pack_examples(examples: Sequence[dict[str, list[int]]], seq_len: int) -> list[dict[str, list[int]]]:
    """Greedily concatenate examples (in order) into rows of at most ``seq_len`` tokens.

    Each example keeps its own labels, so no loss crosses a boundary; ``doc_ids`` number the examples
    within a row so the model's document masking keeps attention (and RoPE positions) inside each.
    """
    rows: list[dict[str, list[int]]] = []
    cur: dict[str, list[int]] = {"input_ids": [], "labels": [], "doc_ids": []}
    for ex in examples:
        n = min(len(ex["input_ids"]), seq_len)  # examples are encoded to fit; this guards odd callers
        if cur["input_ids"] and len(cur["input_ids"]) + n > seq_len:
            rows.append(cur)
            cur = {"input_ids": [], "labels": [], "doc_ids": []}
        doc = cur["doc_ids"][-1] + 1 if cur["doc_ids"] else 0
        cur["input_ids"] += ex["input_ids"][:n]
        cur["labels"] += ex["labels"][:n]
        cur["doc_ids"] += [doc] * n
    if cur["input_ids"]:
        rows.append(cur)
    return rows
