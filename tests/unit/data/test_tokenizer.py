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


WORDS = ["<unk>", "<|endoftext|>", "<s>", "hello", "world", "ROMEO", ":", "a", "b"]


def hf_word_tokenizer(out, *, bos: str | None, adds_bos: bool):
    """A word-level Hugging Face tokenizer: Llama-like (BOS added), GPT-2-like (BOS not added) or Qwen-like (none)."""
    from tokenizers import Tokenizer as FastTokenizer
    from tokenizers import models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    fast = FastTokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    fast.pre_tokenizer = pre_tokenizers.Whitespace()
    if adds_bos:
        fast.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, WORDS.index(bos))])
    hf = PreTrainedTokenizerFast(tokenizer_object=fast, bos_token=bos, eos_token="<|endoftext|>",
                                 pad_token="<|endoftext|>", unk_token="<unk>")
    hf.save_pretrained(str(out))
    return out


@pytest.mark.parametrize(("bos", "adds_bos", "prefix"), [("<s>", True, [2]), ("<|endoftext|>", False, []),
                                                         (None, False, [])])
def test_bos_policy_of_hf_tokenizers_is_their_own_default(tmp_path, bos, adds_bos, prefix):
    tok = load_tokenizer(hf_word_tokenizer(tmp_path / "t", bos=bos, adds_bos=adds_bos))
    assert tok.add_bos is bool(prefix) and tok.bos_prefix == prefix
    assert tok.bos_id == (WORDS.index(bos) if bos else -1) and tok.eos_id == tok.pad_id == 1
    hf = AutoTokenizer.from_pretrained(tmp_path / "t")
    for text in ("ROMEO :", "hello world a b", "a"):
        assert tok.encode_sequence(text) == hf(text).input_ids == prefix + tok.encode(text)


def test_sentencepiece_sequences_start_with_bos(tiny_tokenizer):
    tok = load_tokenizer(tiny_tokenizer)
    assert tok.add_bos and tok.bos_prefix == [1]
    assert tok.encode_sequence("ROMEO:") == [1] + tok.encode("ROMEO:")


def test_tokenizer_files_are_never_weights(tmp_path):
    from llmtrain.data.tokenizer import tokenizer_files

    names = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
             "chat_template.jinja", "generation_config.json", "spiece.model", "config.json", "model.safetensors",
             "model-00001-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "README.md"]
    for n in names:
        (tmp_path / n).write_text("x")
    (tmp_path / "tokenizer_dir").mkdir()
    assert [p.name for p in tokenizer_files(tmp_path)] == sorted(names[:8])
