"""The shard format: the one module that writes and reads token shards.

A shard is two files: ``NAME.bin`` (token ids, uint16 when the vocabulary fits, else uint32, one
document after another, each wrapped in BOS ... EOS) and ``NAME.idx`` (a ``.npy`` int64 array of
``documents + 1`` start offsets into the ``.bin``). ``manifest.json`` in the output directory lists
every shard with its counts, dtype, sha256, tokenizer fingerprint, source and split.

Files are written under a temporary name and renamed into place, so a shard whose name exists is
complete; a shard only counts as prepared once a manifest (or a prepare part record) lists it.
Readers memory-map the ``.bin``: nothing here loads a corpus into RAM.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmtrain.errors import DataError
from llmtrain.fsutil import atomic_write_text

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
UINT16_MAX_VOCAB = 65535
_HASH_CHUNK = 1 << 22


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65535), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= UINT16_MAX_VOCAB else np.uint32)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ShardInfo:
    """One manifest row. ``file`` is relative to the directory holding the manifest."""

    file: str
    tokens: int
    documents: int
    dtype: str
    sha256: str
    tokenizer_fingerprint: str
    source: str
    split: str
    index_sha256: str = ""

    @property
    def index_file(self) -> str:
        return self.file[: -len(".bin")] + ".idx"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> ShardInfo:
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError as e:
            raise DataError(f"{where}: malformed shard entry {d!r} ({e}); re-run `llmtrain prepare "
                            "--config ... --overwrite` to rebuild it") from None


class TokenShardWriter:
    """Stream documents into one shard; ``close()`` renames it into place and returns its ShardInfo."""

    def __init__(self, root: Path, relpath: str, *, dtype: np.dtype, source: str, split: str,
                 tokenizer_fingerprint: str):
        self.root, self.relpath = Path(root), relpath
        self.dtype = np.dtype(dtype)
        self.source, self.split, self.fingerprint = source, split, tokenizer_fingerprint
        self.path = self.root / relpath
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp.{os.getpid()}")
        self._f = open(self._tmp, "wb")  # noqa: SIM115 (a writer object owns the file until close())
        self._hash = hashlib.sha256()
        self._offsets = [0]
        self.tokens = 0

    @property
    def documents(self) -> int:
        return len(self._offsets) - 1

    def add(self, ids: np.ndarray) -> None:
        data = np.ascontiguousarray(ids, dtype=self.dtype).tobytes()
        self._f.write(data)
        self._hash.update(data)
        self.tokens += len(ids)
        self._offsets.append(self.tokens)

    def close(self) -> ShardInfo:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        idx_path = self.path.with_suffix(".idx")
        idx_tmp = idx_path.with_name(f".{idx_path.name}.tmp.{os.getpid()}")
        with open(idx_tmp, "wb") as f:
            np.save(f, np.asarray(self._offsets, dtype=np.int64))
        os.replace(idx_tmp, idx_path)
        os.replace(self._tmp, self.path)  # the .bin appears last: its presence means complete
        return ShardInfo(file=self.relpath, tokens=self.tokens, documents=self.documents,
                         dtype=self.dtype.name, sha256=self._hash.hexdigest(),
                         tokenizer_fingerprint=self.fingerprint, source=self.source, split=self.split,
                         index_sha256=sha256_file(idx_path))

    def abort(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)


_REPREPARE = "re-run `llmtrain prepare --config <data config> --overwrite` to rebuild the shards"


class ShardReader:
    """A memory-mapped shard, checked against its manifest row (size always, sha256 on demand)."""

    def __init__(self, root: Path, info: ShardInfo, *, verify: bool = False):
        self.info = info
        self.path = Path(root) / info.file
        idx_path = Path(root) / info.index_file
        for p in (self.path, idx_path):
            if not p.is_file():
                raise DataError(f"shard file {p} is missing but listed in {Path(root) / MANIFEST}; {_REPREPARE}")
        dtype = np.dtype(info.dtype)
        expected = info.tokens * dtype.itemsize
        actual = self.path.stat().st_size
        if actual != expected:
            raise DataError(f"shard {self.path} has {actual} bytes but the manifest says {info.tokens} "
                            f"{info.dtype} tokens ({expected} bytes): the file is truncated or was replaced; "
                            f"{_REPREPARE}")
        if verify:
            self.verify()
        try:
            self.offsets = np.load(idx_path, mmap_mode="r")
        except ValueError as e:
            raise DataError(f"document index {idx_path} is unreadable ({e}); {_REPREPARE}") from None
        if len(self.offsets) != info.documents + 1 or (info.documents and int(self.offsets[-1]) != info.tokens):
            raise DataError(f"document index {idx_path} lists {len(self.offsets) - 1} documents ending at "
                            f"token {int(self.offsets[-1]) if len(self.offsets) else 0}, the manifest says "
                            f"{info.documents} documents and {info.tokens} tokens; {_REPREPARE}")
        self.tokens = (np.memmap(self.path, dtype=dtype, mode="r") if info.tokens
                       else np.zeros(0, dtype=dtype))

    def verify(self) -> None:
        digest = sha256_file(self.path)
        if digest != self.info.sha256:
            raise DataError(f"shard {self.path} has sha256 {digest[:12]}..., the manifest says "
                            f"{self.info.sha256[:12]}...: its content changed; {_REPREPARE}")

    def document_lengths(self) -> np.ndarray:
        return np.diff(np.asarray(self.offsets))


@dataclass
class Manifest:
    """What one ``llmtrain prepare`` output directory holds."""

    tokenizer_fingerprint: str
    vocab_size: int
    tokenizer_dir: str
    shards: list[ShardInfo]
    stats: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def select(self, source: str, split: str) -> list[ShardInfo]:
        return [s for s in self.shards if s.source == source and s.split == split]

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(s.source for s in self.shards))

    def tokens(self, source: str, split: str) -> int:
        return sum(s.tokens for s in self.select(source, split))

    def fingerprint(self) -> str:
        """Hash of the shard list: identifies exactly which tokens this directory holds."""
        h = hashlib.sha256(self.tokenizer_fingerprint.encode())
        for s in self.shards:
            h.update(f"{s.file}:{s.tokens}:{s.documents}:{s.sha256}".encode())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "vocab_size": self.vocab_size, "tokenizer_dir": self.tokenizer_dir, "stats": self.stats,
                "shards": [asdict(s) for s in self.shards]}


def write_manifest(root: Path, manifest: Manifest) -> Path:
    path = Path(root) / MANIFEST
    atomic_write_text(path, json.dumps(manifest.to_dict(), indent=1) + "\n")
    return path


def read_manifest(root: Path, config_hint: str = "<data config>") -> Manifest:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DataError(f"no {MANIFEST} in {root}: the data is not prepared (or preparation did not finish); "
                        f"run `llmtrain prepare --config {config_hint}` first")
    try:
        d = json.loads(path.read_text())
        manifest = Manifest(tokenizer_fingerprint=d["tokenizer_fingerprint"], vocab_size=int(d["vocab_size"]),
                            tokenizer_dir=d.get("tokenizer_dir", ""), stats=d.get("stats", {}),
                            format_version=int(d.get("format_version", 0)),
                            shards=[ShardInfo.from_dict(s, str(path)) for s in d["shards"]])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path} is not a valid manifest ({type(e).__name__}: {e}); "
                        f"re-run `llmtrain prepare --config {config_hint} --overwrite`") from None
    if manifest.format_version != FORMAT_VERSION:
        raise DataError(f"{path} has shard format version {manifest.format_version}, this llmtrain reads "
                        f"version {FORMAT_VERSION}; re-run `llmtrain prepare --config {config_hint} --overwrite`")
    for s in manifest.shards:
        if s.tokenizer_fingerprint != manifest.tokenizer_fingerprint:
            raise DataError(f"{path}: shard {s.file} was made with tokenizer {s.tokenizer_fingerprint[:12]}, "
                            f"the manifest's tokenizer is {manifest.tokenizer_fingerprint[:12]}; "
                            f"re-run `llmtrain prepare --config {config_hint} --overwrite`")
    return manifest
