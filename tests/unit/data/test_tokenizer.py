import shutil

import pytest
from transformers import AutoTokenizer

from llmtrain.data.tokenizer import load_tokenizer
from llmtrain.errors import DataError

TEXTS = ["Hello world", "  def f(x):\n    return x  + 1\n", "<|user|> hi there<|assistant|>Fine 12345 é 😀\n\n",
         " leading space", "tab\tand\r\nCRLF", "<s>literal control</s> <pad>", "", "ÿ\x00\x7f", "日本語のテキスト"]


def test_hf_ids_match_sentencepiece(tiny_tokenizer):
    tok = load_tokenizer(tiny_tokenizer)
    assert tok.kind == "sentencepiece"
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (1, 2, 3, 400)
    hf = AutoTokenizer.from_pretrained(tiny_tokenizer)
    assert len(hf) == 400 and hf.bos_token_id == 1 and hf.eos_token_id == 2 and hf.pad_token_id == 3
    for text in TEXTS:
        ids = tok.encode(text)
        assert hf.encode(text, add_special_tokens=False) == ids, text
        assert tok.decode(ids) == text
        assert hf.decode(ids) == text
    assert tok.encode_batch(TEXTS[:2]) == [tok.encode(t) for t in TEXTS[:2]]
    user = tok.token_to_id("<|user|>")
    assert user > 3 and tok.encode("<|user|>") == [user]
    assert 1 not in tok.encode("<s>")  # a document cannot forge BOS


def test_save_and_fingerprint(tiny_tokenizer, tmp_path):
    tok = load_tokenizer(tiny_tokenizer)
    saved = load_tokenizer(tok.save(tmp_path / "copy"))
    assert saved.fingerprint == tok.fingerprint and len(tok.fingerprint) == 64
    assert saved.encode(TEXTS[1]) == tok.encode(TEXTS[1])


def test_plain_hf_directory_is_accepted(tiny_tokenizer, tmp_path):
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{tiny_tokenizer}/{name}", hf_dir / name)
    tok = load_tokenizer(hf_dir)
    assert tok.kind == "hf" and tok.vocab_size == 400 and tok.bos_id == 1
    assert tok.encode(TEXTS[2]) == load_tokenizer(tiny_tokenizer).encode(TEXTS[2])


def test_not_a_tokenizer_dir(tmp_path):
    with pytest.raises(DataError, match="llmtrain tokenizer train"):
        load_tokenizer(tmp_path / "nope")
