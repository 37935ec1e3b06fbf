"""A tiny byte-level BPE tokenizer with a ChatML template, and a Llama model directory that uses it.

Built in the test (no network): trained with `tokenizers` on a few sentences, wrapped in
transformers' PreTrainedTokenizerFast and saved with save_pretrained, as a chat model's tokenizer is.
"""

from pathlib import Path

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXTS = ["Be brief and kind.", "hi there, how are you?", "hello! I am fine.", "bye now", "ciao, see you soon",
         "what is two plus two?", "four.", "tell me a story about a cat", "once upon a time a cat sat"] * 20


def save_chat_tokenizer(out: Path, *, template: str = CHATML, vocab_size: int = 300) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.chat_template = template
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out))
    return out


def save_chat_model(out: Path, vocab_size: int = 320) -> Path:
    """A tiny random LlamaForCausalLM with the ChatML tokenizer beside it (a chat model directory)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False, eos_token_id=2, bos_token_id=None, pad_token_id=0)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    save_chat_tokenizer(out)
    return out


MESSAGES = [{"role": "system", "content": "Be brief and kind."},
            {"role": "user", "content": "hi there, how are you?"},
            {"role": "assistant", "content": "hello! I am fine."},
            {"role": "user", "content": "what is two plus two?"},
            {"role": "assistant", "content": "four."}]
