"""The common SFT record layouts mapped onto the two shapes SFT encodes.

Every row becomes either ``{"prompt": str, "response": str}`` or ``{"messages": [{"role", "content"}]}``:

=================  ===============================================  ==================================
layout             row                                              becomes
=================  ===============================================  ==================================
prompt_response    ``{prompt_field: ..., response_field: ...}``     prompt/response
messages (OpenAI)  ``{messages_field: [{"role", "content"}, ...]}``  messages
sharegpt           ``{"conversations": [{"from", "value"}, ...]}``  messages (human -> user, gpt -> assistant)
alpaca             ``{"instruction", "input", "output"}``            prompt = instruction [+ blank line + input]
=================  ===============================================  ==================================

``auto`` picks the layout per row from the fields present, in that order. Errors name the row by its
origin (``file row N``, set by :mod:`llmtrain.data.record_files`), so a bad line can be found.
"""

from __future__ import annotations

from typing import Any

from llmtrain.data.chat import check_messages
from llmtrain.errors import DataError

ORIGIN_KEY = "_origin"  # "FILE row N" on rows read from the user's files; never part of a split hash
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant",
                  "system": "system"}


def where_of(row: dict[str, Any], n: int) -> str:
    """How an error names ``row``: its origin, else its position in the split."""
    return str(row.get(ORIGIN_KEY) or f"record {n}")


def detect_layout(row: dict[str, Any], *, prompt_field: str, response_field: str, messages_field: str | None) -> str | None:
    present = {k for k, v in row.items() if v is not None}
    if {prompt_field, response_field} <= present:
        return "prompt_response"
    if (messages_field or "messages") in present:
        return "messages"
    if "conversations" in present:
        return "sharegpt"
    if {"instruction", "output"} <= present:
        return "alpaca"
    return None


def sft_record(row: dict[str, Any], where: str, *, layout: str = "auto", prompt_field: str = "prompt",
               response_field: str = "response", messages_field: str | None = None) -> dict[str, Any]:
    """``row`` as prompt/response or messages (see the module doc); DataError naming ``where`` otherwise."""
    if layout == "auto":
        found = detect_layout(row, prompt_field=prompt_field, response_field=response_field,
                              messages_field=messages_field)
        if found is None:
            fields = sorted(k for k in row if k != ORIGIN_KEY)
            raise DataError(f"{where}: fields {fields} match no SFT layout; expected {prompt_field!r}+"
                            f"{response_field!r}, {messages_field or 'messages'!r}, 'conversations' (ShareGPT) or "
                            f"'instruction'+'output' (Alpaca). Map yours with finetune.prompt_field / "
                            f"finetune.response_field / finetune.messages_field")
        layout = found
    if layout == "prompt_response":
        return {"prompt": _text(row, prompt_field, where), "response": _text(row, response_field, where)}
    if layout == "alpaca":
        prompt = _text(row, "instruction", where)
        extra = row.get("input")
        if extra is not None and str(extra).strip():
            prompt += "\n\n" + str(extra)
        return {"prompt": prompt, "response": _text(row, "output", where)}
    if layout == "sharegpt":
        field = messages_field or "conversations"
        turns = row.get(field)
        if not isinstance(turns, list):
            raise DataError(f"{where}: ShareGPT field {field!r} is {str(turns)[:60]!r}, not a list of "
                            f"{{\"from\", \"value\"}} objects")
        msgs = []
        for n, t in enumerate(turns):
            role = SHAREGPT_ROLES.get(str(t.get("from")).lower()) if isinstance(t, dict) else None
            if role is None or not isinstance(t.get("value"), str):
                raise DataError(f"{where}: ShareGPT turn {n} is {str(t)[:80]!r}; it needs \"from\" in "
                                f"{sorted(SHAREGPT_ROLES)} and a string \"value\"")
            msgs.append({"role": role, "content": t["value"]})
        return {"messages": check_messages(msgs, where)}
    field = messages_field or "messages"
    return {"messages": check_messages(row.get(field), where)}


def _text(row: dict[str, Any], field: str, where: str) -> str:
    value = row.get(field)
    if value is None:
        present = sorted(k for k, v in row.items() if v is not None and k != ORIGIN_KEY)
        raise DataError(f"{where}: field {field!r} is missing or null (fields present: {present}); fix the row or "
                        f"map the field in the finetune config")
    return str(value)
