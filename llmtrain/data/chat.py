"""Conversations as token ids plus a loss mask: the tokenizer's Jinja chat template, or our format string.

A conversation is a list of ``{"role": "system" | "user" | "assistant", "content": str}``. Every
assistant turn is trained: the mask is True on the assistant's content and its end token, False on
everything the template adds around it (role headers, system text, user turns, the newline after an
end-of-turn token).

- **Tokenizer template** (a Hugging Face tokenizer with ``chat_template``): the ids are exactly
  ``tokenizer.apply_chat_template(messages)``, so the model is tuned on the format it will be served
  with. Assistant spans come from rendering prefixes: turn *i* starts after
  ``apply_chat_template(messages[:i], add_generation_prompt=True)`` and ends at the end of
  ``apply_chat_template(messages[:i + 1])``, minus trailing whitespace tokens. A template whose
  earlier renders are not prefixes of later ones (one that rewrites past turns) is refused by name.
- **Format string** (``finetune.chat_template``, ``{prompt}`` = the user's text): segments are
  encoded one by one as ``BOS [system "\\n"] template(user) assistant EOS ...``;
  :func:`format_to_jinja` writes the same text as a Jinja template for Hugging Face users.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from llmtrain.errors import DataError

Message = dict[str, str]
ROLES = ("system", "user", "assistant")
JINJA_TEMPLATE_FILE = "chat_template.jinja"  # the name transformers reads a tokenizer's chat template from
IGNORE_INDEX = -100  # label of a position without loss (PyTorch cross-entropy's ignore_index)


class ChatTokenizer(Protocol):
    eos_id: int

    @property
    def bos_prefix(self) -> list[int]: ...

    @property
    def chat_template(self) -> str | None: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def apply_chat_template(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> list[int]: ...


def tokenizer_template(tokenizer: Any) -> str | None:
    """The tokenizer's own Jinja chat template, or None (SentencePiece, or a HF tokenizer without one)."""
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) and template.strip() else None


def check_messages(messages: Any, where: str) -> list[Message]:
    """``messages`` as clean ``{"role", "content"}`` dicts; DataError naming ``where`` otherwise."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: messages must be a non-empty list of {{\"role\", \"content\"}} objects, "
                        f"got {str(messages)[:80]!r}")
    out = []
    for n, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: message {n} is {str(m)[:80]!r}; each message needs a role in {ROLES} "
                            f"and a string content")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError(f"{where}: the conversation has no assistant message, so nothing would be trained")
    if out[0]["role"] == "assistant":
        raise DataError(f"{where}: the conversation starts with the assistant; put a user (or system) message first")
    return out


def template_conversation(tokenizer: ChatTokenizer, messages: list[Message], where: str) -> tuple[list[int], list[bool]]:
    """Ids of ``apply_chat_template(messages)`` and a mask over every assistant turn (see module doc)."""
    full = list(tokenizer.apply_chat_template(messages))
    mask = [False] * len(full)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = list(tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True))
        through = list(tokenizer.apply_chat_template(messages[: i + 1]))
        if full[: len(through)] != through or through[: len(prefix)] != prefix:
            raise DataError(f"{where}: the tokenizer's chat template renders turn {i} differently once later turns "
                            f"follow (it rewrites earlier turns), so the assistant spans cannot be found by prefix; "
                            f"use a template that renders each turn independently, or set the tokenizer's "
                            f"chat_template to one")
        end = len(through)
        while end > len(prefix) and not tokenizer.decode([full[end - 1]]).strip():
            end -= 1  # the newline after an end-of-turn token belongs to the template, not the answer
        mask[len(prefix):end] = [True] * (end - len(prefix))
    return full, mask


def format_conversation(tokenizer: ChatTokenizer, messages: list[Message], template: str) -> tuple[list[int], list[bool]]:
    """Ids and mask of the format-string rendering (module doc); the same text :func:`format_to_jinja` gives."""
    pre, post = split_format(template)
    ids, mask = list(tokenizer.bos_prefix), [False] * len(tokenizer.bos_prefix)
    for m in messages:
        if m["role"] == "assistant":
            seg, trained = tokenizer.encode(m["content"]) + [tokenizer.eos_id], True
        elif m["role"] == "user":
            seg, trained = tokenizer.encode(pre + m["content"] + post), False
        else:
            seg, trained = tokenizer.encode(m["content"] + "\n"), False
        ids += seg
        mask += [trained] * len(seg)
    return ids, mask


def split_format(template: str) -> tuple[str, str]:
    """The text before and after ``{prompt}`` of a format-string template."""
    if template.count("{prompt}") != 1:
        raise DataError(f"finetune.chat_template {template!r} must contain {{prompt}} exactly once; fix it")
    pre, post = template.split("{prompt}")
    return pre, post


def format_to_jinja(template: str, *, add_bos: bool) -> str:
    """A Jinja chat template that renders conversations as the format string does in training.

    With ``add_generation_prompt`` it adds nothing: the user part of the format already ends with the
    assistant's cue. Literal text is written as JSON string literals, which Jinja reads the same way.
    """
    pre, post = split_format(template)
    return ("{%- if bos_token and " + ("true" if add_bos else "false") + " %}{{ bos_token }}{% endif -%}"
            "{%- for message in messages -%}"
            "{%- if message['role'] == 'system' %}{{ message['content'] }}{{ \"\\n\" }}"
            f"{{%- elif message['role'] == 'user' %}}{{{{ {json.dumps(pre)} }}}}{{{{ message['content'] }}}}"
            f"{{{{ {json.dumps(post)} }}}}"
            "{%- elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}"
            "{%- endif -%}{%- endfor -%}")


def shifted_window(ids: list[int], mask: list[bool], seq_len: int) -> dict[str, list[int]] | None:
    """Pre-shifted ``input_ids``/``labels`` of at most ``seq_len`` tokens; None when no trained token fits.

    A long conversation keeps its beginning (system prompt, first turns); when not even the first
    assistant turn fits that way, the window ends where that turn ends instead.
    """
    budget = seq_len + 1
    start = 0
    if len(ids) > budget and not any(mask[1:budget]):
        first = mask.index(True) if True in mask else 0
        end = first
        while end < len(mask) and mask[end]:
            end += 1
        start = max(0, end - budget)
    ids, mask = ids[start:start + budget], mask[start:start + budget]
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:], strict=True)]
    if len(ids) < 2 or all(t == IGNORE_INDEX for t in labels):
        return None
    return {"input_ids": ids[:-1], "labels": labels}
