"""Supervised fine-tuning examples: chat template, response-only labels, optional packing.

A record is ``{"prompt": ..., "response": ...}`` or ``{"messages": [{"role", "content"}, ...]}``
whose last message is the assistant's. The prompt side is rendered with the chat template
(``finetune.chat_template``, ``{prompt}`` = the user's text); earlier turns are rendered as
template + reply + newline, a system message goes first on its own line. The token sequence is

    BOS  template(prompt)  response  EOS

and training uses it pre-shifted (``input_ids = seq[:-1]``, ``labels = seq[1:]``) with labels -100
everywhere on the prompt side, so the loss covers the response tokens and the EOS only.

The template is saved with the model (``llmtrain.modelio.layout.CHAT_TEMPLATE_FILE``) so generation
formats prompts exactly as training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from llmtrain.errors import DataError

IGNORE_INDEX = -100


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


def encode_sft(records: Sequence[dict[str, Any]], tokenizer: TextTokenizer, template: str,
               seq_len: int) -> list[dict[str, list[int]]]:
    """Encode every record; records whose response cannot fit are dropped."""
    out = []
    for rec in records:
        ex = encode_example(tokenizer, *prompt_and_response(rec, template), seq_len)
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
