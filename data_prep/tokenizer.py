"""Train a SentencePiece BPE tokenizer and write it in both SentencePiece and Hugging Face form.

Settings are chosen so that a plain ``tokenizers`` BPE reproduces SentencePiece's ids exactly:
identity normalization, no dummy prefix and no whitespace squeezing (code keeps its indentation),
byte fallback for anything unseen. The lines trained on are a seeded reservoir sample taken here, not
SentencePiece's own sampling (which gave another tokenizer on every run once the input had more
lines than ``sample_sentences``): the same input and seed always give the same tokenizer. The Hugging Face side is built directly as a ``tokenizer.json``
(BPE + ``" " -> "▁"``) because transformers 5.x's ``LlamaTokenizer`` always prepends "▁" and its
``vocab_file=`` constructor silently builds an empty tokenizer.
"""

from __future__ import annotations

import io
import json
import os
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from llmtrain.data.tokenizer import META_FILE, SP_MODEL, Tokenizer, load_tokenizer
from llmtrain.distributed.logging import get_logger
from llmtrain.errors import DataError
from llmtrain.fsutil import atomic_write_bytes

log = get_logger(__name__)

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
MAX_LINE_BYTES = 4096


def _sentences(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    """Non-empty lines of the documents, up to ``max_chars`` characters in all."""
    seen = 0
    for text in texts:
        for line in text.splitlines():
            if not line.strip() or len(line.encode("utf-8", "replace")) > MAX_LINE_BYTES:
                continue
            seen += len(line)
            yield line
            if seen >= max_chars:
                return


def reservoir_sample(lines: Iterable[str], k: int, seed: int) -> tuple[list[str], int]:
    """At most ``k`` lines, uniformly chosen with a seeded generator (Algorithm R), in input order;
    returns them and the number of lines seen."""
    rng = random.Random(seed)
    keep: list[tuple[int, str]] = []
    n = 0
    for n, line in enumerate(lines, 1):
        if len(keep) < k:
            keep.append((n, line))
        else:
            j = rng.randrange(n)
            if j < k:
                keep[j] = (n, line)
    return [line for _, line in sorted(keep)], n


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, *, vocab_size: int,
                    special_tokens: list[str] | None = None, sample_sentences: int = 300_000,
                    max_chars: int = 50_000_000, seed: int = 1234, threads: int | None = None) -> Tokenizer:
    """Train on (a sample of) ``texts``; write tokenizer.model, tokenizer.json and configs to ``out_dir``."""
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = list(dict.fromkeys(special_tokens or []))
    t0 = time.time()
    sample, seen = reservoir_sample(_sentences(texts, max_chars), sample_sentences, seed)
    counter = {"n": len(sample)}

    # The model goes to a buffer, not a file prefix: the prefix path would be stored in the model and
    # make the fingerprint differ between identical trainings.
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample), model_writer=model, vocab_size=vocab_size, model_type="bpe",
            byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=3,
            unk_piece=UNK, bos_piece=BOS, eos_piece=EOS, pad_piece=PAD,
            user_defined_symbols=specials, normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=False, split_digits=True,
            allow_whitespace_only_pieces=True, character_coverage=0.9999,
            input_sentence_size=0, shuffle_input_sentence=False, seed_sentencepiece_size=1_000_000,
            num_threads=threads or min(4, os.cpu_count() or 1), minloglevel=2, hard_vocab_limit=True)
    except RuntimeError as e:
        raise DataError(f"SentencePiece training failed ({e}); with {counter['n']} input lines a vocab of "
                        f"{vocab_size} may be too large: lower --vocab-size or give more text") from None
    atomic_write_bytes(out / SP_MODEL, model.getvalue())
    write_hf_files(out, specials)
    meta = {"type": "sentencepiece-bpe", "vocab_size": vocab_size, "special_tokens": specials,
            "trained_on_lines": counter["n"], "lines_read": seen, "seed": seed, "bos": BOS, "eos": EOS, "pad": PAD, "unk": UNK}
    atomic_write_bytes(out / META_FILE, (json.dumps(meta, indent=1) + "\n").encode())  # written last: marks complete
    tok = load_tokenizer(out)
    log.info(f"[tokenizer] trained vocab {tok.vocab_size} on {counter['n']:,} lines (sampled from {seen:,}) in {time.time() - t0:.1f}s "
        f"-> {out} (fingerprint {tok.fingerprint[:12]})")
    return tok


def write_hf_files(out: Path, specials: list[str]) -> None:
    """Write tokenizer.json + tokenizer_config.json equivalent to ``out/tokenizer.model``."""
    from tokenizers import AddedToken, decoders, models, normalizers
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    extracted = SentencePieceExtractor(str(out / SP_MODEL)).extract(models.BPE)
    # transformers 5.x returns a kwargs dict, 4.x a (vocab, merges) tuple.
    vocab, merges = ((extracted["vocab"], extracted["merges"]) if isinstance(extracted, dict) else extracted[:2])
    # Merge ranks follow piece scores; SentencePiece BPE applies merges in that order too.
    controls = {UNK, BOS, EOS, PAD}
    merges = [m for m in merges if "".join(m) not in controls]  # SentencePiece never builds control pieces
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True, fuse_unk=True)
    backend = HFTokenizer(bpe)
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    # Like SentencePiece: user-defined symbols are matched in text, control tokens (<s>, </s>, ...)
    # written in text are just text (split_special_tokens) so a document cannot forge a BOS.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (UNK, BOS, EOS, PAD)])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in specials])
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                 pad_token=PAD, split_special_tokens=True)
    hf.save_pretrained(str(out))
