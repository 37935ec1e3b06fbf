"""SFT through a tokenizer's own chat template, and the format-string fallback with its Jinja twin."""

import pytest
from chattools import CHATML, MESSAGES, save_chat_tokenizer

from llmtrain.data.chat import format_conversation, format_to_jinja
from llmtrain.data.sft import encode_sft
from llmtrain.data.tokenizer import load_tokenizer, tokenizer_files
from llmtrain.errors import DataError


@pytest.fixture(scope="module")
def chat_tok(tmp_path_factory):
    return load_tokenizer(save_chat_tokenizer(tmp_path_factory.mktemp("chatml")))


def _trained_runs(ex):
    """The trained target ids, grouped into contiguous runs."""
    runs, cur = [], []
    for t in ex["labels"]:
        if t == -100:
            if cur:
                runs.append(cur)
            cur = []
        else:
            cur.append(t)
    return runs + ([cur] if cur else [])


def test_ids_equal_apply_chat_template_and_only_assistant_turns_are_trained(chat_tok):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(chat_tok.directory))
    expected = hf.apply_chat_template(MESSAGES, tokenize=True, return_dict=False)
    (ex,) = encode_sft([{"messages": MESSAGES}], chat_tok, "unused {prompt}", seq_len=512)
    assert ex["input_ids"] == expected[:-1] and len(ex["labels"]) == len(expected) - 1
    assert all(t == -100 or t == expected[j + 1] for j, t in enumerate(ex["labels"]))
    # exactly the assistant spans: each assistant content and its <|im_end|>, nothing of the template around it
    assert [hf.decode(r) for r in _trained_runs(ex)] == ["hello! I am fine.<|im_end|>", "four.<|im_end|>"]
    text = hf.apply_chat_template(MESSAGES, tokenize=False)
    offsets = hf(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    spans = []
    for m in MESSAGES:
        if m["role"] == "assistant":
            start = text.index("<|im_start|>assistant\n" + m["content"]) + len("<|im_start|>assistant\n")
            spans.append((start, start + len(m["content"] + "<|im_end|>")))
    want = {i for i, (a, b) in enumerate(offsets) if any(s <= a and b <= e for s, e in spans)}
    assert {j + 1 for j, t in enumerate(ex["labels"]) if t != -100} == want


def test_prompt_response_pairs_use_the_template_too(chat_tok):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(chat_tok.directory))
    msgs = [{"role": "user", "content": "bye now"}, {"role": "assistant", "content": "ciao"}]
    (ex,) = encode_sft([{"prompt": "bye now", "response": "ciao"}], chat_tok, "U:{prompt}", seq_len=512)
    assert ex["input_ids"] == hf.apply_chat_template(msgs, tokenize=True, return_dict=False)[:-1]
    assert [hf.decode(r) for r in _trained_runs(ex)] == ["ciao<|im_end|>"]


def test_the_template_travels_with_the_tokenizer_files(chat_tok):
    names = {p.name for p in tokenizer_files(chat_tok.directory)}
    assert "tokenizer.json" in names and ({"chat_template.jinja", "tokenizer_config.json"} & names)
    assert chat_tok.chat_template == CHATML


def test_a_template_that_rewrites_earlier_turns_is_refused(tmp_path):
    rewrites = ("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}{{ m['role'] + ':' + "
                "m['content'] + '<|im_end|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}a:{% endif %}")
    tok = load_tokenizer(save_chat_tokenizer(tmp_path / "t", template=rewrites))
    with pytest.raises(DataError, match="record 0: the tokenizer's chat template renders turn 2 differently"):
        encode_sft([{"messages": MESSAGES}], tok, "{prompt}", seq_len=512)


def test_a_long_conversation_keeps_its_start_else_ends_at_the_first_answer(chat_tok):
    full = chat_tok.apply_chat_template(MESSAGES)
    (ex,) = encode_sft([{"messages": MESSAGES}], chat_tok, "{prompt}", seq_len=len(full) - 6)
    assert ex["input_ids"] == full[:len(full) - 6]  # the system prompt and first turns stay
    # too short for the first answer from the start: the window ends where that answer ends
    (ex,) = encode_sft([{"messages": MESSAGES}], chat_tok, "{prompt}", seq_len=30)
    runs = _trained_runs(ex)
    assert len(ex["input_ids"]) == 30 and chat_tok.decode(runs[-1]) == "hello! I am fine.<|im_end|>"
    seq = ex["input_ids"] + [ex["labels"][-1]]
    assert any(full[s:s + 31] == seq for s in range(len(full) - 30))


class ByteTok:
    bos_id, eos_id, pad_id = 1, 2, 0
    bos_prefix = [1]

    def encode(self, text):
        return [b + 3 for b in text.encode()]


def test_format_string_fallback_trains_every_assistant_turn_and_matches_its_jinja(chat_tok):
    ids, mask = format_conversation(ByteTok(), MESSAGES, "U:{prompt}\nA:")
    text = "Be brief and kind.\nU:hi there, how are you?\nA:"
    assert ids[:1 + len(text)] == [1] + ByteTok().encode(text) and not any(mask[:1 + len(text)])
    trained = [i for i, m in zip(ids, mask, strict=True) if m]
    assert trained == ByteTok().encode("hello! I am fine.") + [2] + ByteTok().encode("four.") + [2]
    # the Jinja twin renders the same text, with the tokenizer's own special tokens
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(chat_tok.directory))
    jinja = format_to_jinja("U:{prompt}\nA:", add_bos=False)
    rendered = hf.apply_chat_template(MESSAGES, tokenize=False, chat_template=jinja)
    assert rendered == ("Be brief and kind.\nU:hi there, how are you?\nA:hello! I am fine.<|im_end|>"
                        "U:what is two plus two?\nA:four.<|im_end|>")
    assert hf.apply_chat_template(MESSAGES[:2], tokenize=False, chat_template=jinja,
                                  add_generation_prompt=True).endswith("U:hi there, how are you?\nA:")
    quoted = format_to_jinja('say "{prompt}" {{ not jinja }}\n', add_bos=False)
    assert hf.apply_chat_template(MESSAGES[1:3], tokenize=False, chat_template=quoted) == \
        'say "hi there, how are you?" {{ not jinja }}\nhello! I am fine.<|im_end|>'
