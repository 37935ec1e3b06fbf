"""`llmtrain tokenizer train`: a SentencePiece BPE tokenizer, also loadable by Hugging Face."""

from __future__ import annotations

import argparse
from pathlib import Path

# the files a trained tokenizer directory holds; --overwrite removes these and nothing else
WRITTEN = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
           "chat_template.jinja", "llmtrain_tokenizer.json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train a tokenizer (SentencePiece BPE + Hugging Face files)",
                       description="Train a byte-fallback SentencePiece BPE tokenizer on raw text and write "
                                   "tokenizer.model plus an equivalent Hugging Face tokenizer.json to --out.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    t = actions.add_parser("train", help="train on text files (txt/jsonl/parquet, dirs, globs)")
    t.add_argument("--input", nargs="+", required=True, metavar="PATH", help="files, directories or globs of text")
    t.add_argument("--vocab-size", type=int, required=True, help="vocabulary size (e.g. 8192, 32000)")
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--format", default="auto", help="input format (auto, txt, jsonl, parquet, hf_disk)")
    t.add_argument("--text-field", default="text", help="record field holding the text (jsonl/parquet)")
    t.add_argument("--special-tokens", nargs="*", default=None,
                   help="user-defined special tokens (default: the chat markers <|system|> <|user|> <|assistant|> <|end|>)")
    t.add_argument("--sample-sentences", type=int, default=1_000_000, help="lines sampled for training (bounds memory)")
    t.add_argument("--max-chars", type=int, default=500_000_000, help="stop reading inputs after this many characters")
    t.add_argument("--seed", type=int, default=1234, help="sampling seed")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the tokenizer files of an existing --out (other files there are kept)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from data_prep.sources import ReadStats, list_inputs, read_documents
    from data_prep.tokenizer import train_tokenizer
    from llmtrain.config.data import CHAT_MARKERS
    from llmtrain.errors import DataError

    if args.vocab_size < 300:
        raise DataError(f"--vocab-size {args.vocab_size} is too small: byte fallback alone needs 256 + 4 ids")
    if args.vocab_size > 1 << 20:
        raise DataError(f"--vocab-size {args.vocab_size} is far above any useful vocabulary (at most {1 << 20}; "
                        f"common sizes are 8192 to 262144)")
    files = list_inputs(args.input, args.format)
    check_out(Path(args.out), [Path(p) for p in args.input if "*" not in p] + files, args.overwrite)
    stats = ReadStats()
    texts = (doc for f in files for doc in read_documents(f, args.format, args.text_field, stats))
    specials = CHAT_MARKERS if args.special_tokens is None else args.special_tokens
    train_tokenizer(texts, args.out, vocab_size=args.vocab_size, special_tokens=specials,
                    sample_sentences=args.sample_sentences, max_chars=args.max_chars, seed=args.seed)
    if stats.empty_files or stats.replaced_chars:
        print(f"[tokenizer] skipped {stats.empty_files} empty file(s); replaced {stats.replaced_chars} undecodable bytes")
    return 0


def check_out(out: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse an --out that holds a tokenizer (unless --overwrite) or overlaps an input."""
    from llmtrain.errors import DataError

    target = out.resolve()
    for f in inputs:
        f = f.resolve()
        if f == target or target in f.parents or f in target.parents:
            raise DataError(f"--out {out} overlaps the input {f}; inputs are never written: pick an --out outside them")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a directory; pick another --out")
    existing = [name for name in WRITTEN if (out / name).exists()]
    if existing and not overwrite:
        raise DataError(f"--out {out} already holds a tokenizer ({', '.join(existing)}); pick another --out, or pass "
                        f"--overwrite to replace those files")
    for name in existing:
        (out / name).unlink()
