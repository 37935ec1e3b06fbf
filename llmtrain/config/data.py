"""The data config (``configs/data/*.yaml``): which sources, which tokenizer, how to shard and mix.

One file drives tokenizer training, ``llmtrain prepare`` (raw text -> shards), ``llmtrain mixture``
(planning) and the training loader (weights). Relative paths are resolved against the current
working directory, like every other path a command takes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llmtrain.config.base import ConfigError, build, field

STARTER_SOURCES = ("shakespeare", "python_stdlib", "wikipedia", "news", "python_docs", "foldoc", "jargon",
                   "fortunes", "movie_reviews")
FORMATS = ("auto", "jsonl", "txt", "parquet", "hf_disk", "hf_files")
CHAT_MARKERS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class TokenizerSpec:
    path: str = field(help="tokenizer directory: ours (trained by prepare if missing) or an existing HF tokenizer dir")
    vocab_size: int = field(8192, help="vocabulary size when training (ids fit uint16 up to 65535)", min=300)
    sample_sentences: int = field(300_000, help="SentencePiece input_sentence_size: lines sampled for training", min=1000)
    sample_chars: int = field(50_000_000, help="characters read from the sources (split evenly) to train on", min=10_000)
    special_tokens: list[str] = field(default_factory=lambda: list(CHAT_MARKERS),
                                      help="user-defined special tokens kept whole (chat markers used by SFT)")


@dataclass
class SourceConfig:
    name: str = field(help="source name: shard subdirectory, mixture key, validation report label")
    starter: str | None = field(None, help="named offline starter corpus fetched into LLMTRAIN_CACHE",
                                choices=STARTER_SOURCES)
    path: str | list[str] | None = field(None, help="file(s), directories or globs of raw text")
    format: str = field("auto", help="input format (auto = by file extension)", choices=FORMATS)
    text_field: str | None = field(None, help="record field holding the text (jsonl/parquet/HF); default data.text_field")
    weight: float = field(1.0, help="mixture weight (normalized over sources); 0 = prepared but not sampled", min=0)
    tokens: float | None = field(None, help="declared size in tokens, for planning a source not prepared here", gt=0)
    max_epochs: float | None = field(None, help="repetition cap: a plan drawing more epochs is refused", gt=0)
    validation_fraction: float | None = field(None, help="held-out share of documents (default data.validation_fraction)", min=0)
    max_chars: int | None = field(None, help="read at most this many characters of the source (keeps demos small)", gt=0)
    optional: bool = field(False, help="skip (with a message) when the source cannot be fetched, e.g. no apt")
    allow_empty: bool = field(False, help="accept a source that yields no document (prepare refuses it otherwise)")
    max_undecodable_fraction: float = field(0.5, help="refuse the source when more than this share of its documents "
                                                      "had bytes that are not UTF-8 (1 = never refuse)", min=0)

    @property
    def paths(self) -> list[str]:
        if self.path is None:
            return []
        return [self.path] if isinstance(self.path, str) else list(self.path)

    @property
    def planning_only(self) -> bool:
        return self.starter is None and self.path is None

    def check(self) -> list[str]:
        out = []
        if not _NAME.match(self.name or ""):
            out.append(f"name: {self.name!r} must be letters, digits, '_', '.', '-' (it names a directory)")
        given = [k for k in ("starter", "path") if getattr(self, k) is not None]
        if len(given) > 1:
            out.append(f"starter and path are both given for source {self.name}; keep one")
        if not given and self.tokens is None:
            out.append(f"source {self.name} needs starter: NAME, path: FILES, or tokens: N (planning only)")
        if self.validation_fraction is not None and self.validation_fraction >= 1:
            out.append(f"validation_fraction must be < 1, got {self.validation_fraction}")
        return out


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(help="the corpora of this mixture, each with a weight")
    tokenizer: TokenizerSpec | None = field(None, help="tokenizer to use (and to train when its directory is missing)")
    output_dir: str = field("data/starter", help="where prepare writes shards and manifest.json")
    shard_tokens: int = field(50_000_000, help="maximum tokens per shard file (bounded shard size)", min=1000)
    part_bytes: int = field(256 << 20, help="input bytes per work part: the unit of --num-shards splitting and resume", min=1)
    validation_fraction: float = field(0.005, help="default held-out share of documents per source", min=0)
    text_field: str = field("text", help="default record field holding the text")
    dedup: bool = field(True, help="drop exact duplicate documents (first occurrence per source wins)")
    min_chars: int = field(0, help="drop documents shorter than this many characters (after stripping)", min=0)
    seed: int = field(1234, help="seed of the train/validation split and of tokenizer sampling")
    max_epochs: float | None = field(None, help="default repetition cap for every source", gt=0)

    def check(self) -> list[str]:
        out = []
        if not self.sources:
            out.append("sources: the mixture is empty; list at least one source (see configs/data/starter.yaml)")
            return out
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            out.append(f"sources: duplicate names {', '.join(dup)}; each source needs its own name")
        if sum(s.weight for s in self.sources) <= 0:
            out.append("sources: weights sum to zero; give at least one source a positive weight")
        if self.validation_fraction >= 1:
            out.append(f"validation_fraction must be < 1, got {self.validation_fraction}")
        if self.tokenizer is None and any(not s.planning_only for s in self.sources):
            out.append("tokenizer: required when a source has starter or path (give tokenizer.path)")
        return out

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        from llmtrain.config.base import closest
        raise ConfigError([f"no source named {name!r}{closest(name, [s.name for s in self.sources])}; "
                           f"sources: {', '.join(s.name for s in self.sources)}"])

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)


def load_data_config(path: str | Path, overrides: list[str] | None = None) -> DataConfig:
    """Read, override and validate a data config; raises one ConfigError listing every problem."""
    from llmtrain.config.loader import apply_overrides, read_yaml

    data = apply_overrides(read_yaml(path), overrides)
    return build(DataConfig, data, source=str(path))
