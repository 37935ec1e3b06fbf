"""The pretraining loader: memory-mapped shards -> packed, blended, DP-sharded micro-batches.

Global sample ``s`` is a pure function of (seed, weights, shards): the blend index picks the source
and the source's ``k``-th sample, which is a window of ``seq_len + 1`` tokens of that source's
packed document stream (documents shuffled per epoch, windows shuffled per epoch, reshuffled when a
source repeats). Which global samples a rank reads when is :class:`GlobalBatchSampler`'s rule, shared
with fine-tuning: the global batches do not depend on the data-parallel size, and resuming from
``consumed_samples`` neither repeats nor skips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmtrain.config.data import DataConfig, load_data_config
from llmtrain.data.doc_index import Tables, epoch_tables, shared_tables, tables_key
from llmtrain.data.mixture import BlendIndex
from llmtrain.data.sampler import GlobalBatchSampler
from llmtrain.data.shards import Manifest, ShardInfo, ShardReader, read_manifest
from llmtrain.errors import DataError


class SourceStream:
    """One source's documents of one split as a packed token stream cut into ``seq_len + 1`` windows.

    Per-rank memory is O(shards): documents are found through the shards' memory-mapped ``.idx``
    offsets, and the per-epoch order tables are memory-mapped from ``<prepared dir>/index/``
    (:mod:`llmtrain.data.doc_index`), built once by whichever process needs them first.
    """

    def __init__(self, root: Path, shards: list[ShardInfo], name: str, seq_len: int, seed: int, *,
                 shuffle: bool, verify: bool = False):
        self.root, self.name, self.seq_len, self.seed, self.shuffle = Path(root), name, seq_len, seed, shuffle
        self.readers = [ShardReader(root, s, verify=verify) for s in shards]
        docs = [len(r.offsets) - 1 for r in self.readers]
        self.first_doc = np.zeros(len(docs) + 1, dtype=np.int64)  # global number of each shard's first document
        np.cumsum(docs, out=self.first_doc[1:])
        self.documents = int(self.first_doc[-1])
        self.tokens = sum(int(r.offsets[-1]) - int(r.offsets[0]) for r, n in zip(self.readers, docs, strict=True) if n)
        self.samples_per_epoch = max(0, (self.tokens - 1) // seq_len)
        split = shards[0].split if shards else "none"
        self.key = tables_key([(s.file, s.sha256, s.documents) for s in shards], name=name, split=split, seed=seed,
                              seq_len=seq_len, shuffle=shuffle)
        self._epochs: dict[int, Tables] = {}

    def _build(self, e: int) -> Tables:
        lengths = [np.diff(np.asarray(r.offsets)) for r in self.readers]
        doc_len = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
        return epoch_tables(doc_len, self.samples_per_epoch, seed=self.seed, name=self.name, epoch=e,
                            shuffle=self.shuffle)

    def _epoch(self, e: int) -> Tables:
        if e not in self._epochs:
            if len(self._epochs) >= 2:  # a blend touches at most the current and next epoch of a source
                self._epochs.pop(min(self._epochs))
            self._epochs[e] = shared_tables(self.root, self.key, e, lambda: self._build(e))
        return self._epochs[e]

    def _document(self, g: int) -> tuple[ShardReader, int, int]:
        """Shard reader, start offset and length of global document ``g``."""
        s = int(np.searchsorted(self.first_doc, g, side="right")) - 1
        offsets = self.readers[s].offsets
        local = g - int(self.first_doc[s])
        start = int(offsets[local])
        return self.readers[s], start, int(offsets[local + 1]) - start

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and per-token document index (from 0) of the source's k-th sample."""
        if self.samples_per_epoch == 0:
            raise DataError(f"source {self.name} has {self.tokens} tokens, fewer than seq_len + 1 = "
                            f"{self.seq_len + 1}; lower seq_len, give it more data or set its weight to 0")
        epoch, j = divmod(int(k), self.samples_per_epoch)
        t = self._epoch(epoch)
        doc_order, cum = t["doc_order"], t["cum"]
        pos, need = int(t["sample_order"][j]) * self.seq_len, self.seq_len + 1
        d = int(np.searchsorted(cum, pos, side="right")) - 1
        toks = np.empty(need, dtype=np.int64)
        ids = np.empty(need, dtype=np.int64)
        filled, doc = 0, 0
        while filled < need:
            reader, start, length = self._document(int(doc_order[d]))
            offset = pos - int(cum[d]) if filled == 0 else 0
            take = min(length - offset, need - filled)
            toks[filled: filled + take] = reader.tokens[start + offset: start + offset + take]
            ids[filled: filled + take] = doc
            filled, doc, d = filled + take, doc + 1, d + 1
        return toks, ids


def _batch(rows: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    import torch

    toks = np.stack([t for t, _ in rows])
    ids = np.stack([i for _, i in rows])
    return {"input_ids": torch.from_numpy(toks[:, :-1].copy()), "labels": torch.from_numpy(toks[:, 1:].copy()),
            "doc_ids": torch.from_numpy(ids[:, :-1].copy())}


def _open(data_config_path: str) -> tuple[DataConfig, Manifest]:
    cfg = load_data_config(data_config_path)
    return cfg, read_manifest(cfg.output_path, data_config_path)


def tokenizer_dir_of(cfg: DataConfig, manifest: Manifest) -> str:
    """The tokenizer of the shards: the data config's ``tokenizer.path`` when it holds the tokenizer the
    manifest names (so a prepared directory can move to another machine or mount point), else the
    absolute path recorded at prepare time."""
    from llmtrain.data.tokenizer import is_tokenizer_dir, load_tokenizer

    if cfg.tokenizer is not None and is_tokenizer_dir(cfg.tokenizer.path):
        named = load_tokenizer(cfg.tokenizer.path).fingerprint
        if named != manifest.tokenizer_fingerprint:  # never train on one tokenizer and save another
            raise DataError(f"the data config names tokenizer {cfg.tokenizer.path} (fingerprint {named[:12]}) but its "
                            f"shards in {cfg.output_path} were made with {manifest.tokenizer_fingerprint[:12]} "
                            f"({manifest.tokenizer_dir}); point tokenizer.path at that tokenizer, or re-run "
                            f"`llmtrain prepare --config <data config> --overwrite` with this one")
        return str(Path(cfg.tokenizer.path).resolve())
    return manifest.tokenizer_dir


class PretrainLoader:
    """Deterministic, resumable, data-parallel micro-batches of packed pretraining sequences."""

    def __init__(self, data_config_path: str, *, split: str = "train", seq_len: int, micro_batch_size: int,
                 global_batch_size: int, dp_rank: int, dp_size: int, seed: int,
                 weights: dict[str, float] | None = None, verify: bool = False):
        if seq_len < 1 or micro_batch_size < 1 or dp_size < 1 or not 0 <= dp_rank < dp_size:
            raise DataError(f"invalid loader shape: seq_len={seq_len}, micro_batch_size={micro_batch_size}, "
                            f"dp_rank={dp_rank}, dp_size={dp_size}")
        self.sampler = GlobalBatchSampler(micro_batch_size=micro_batch_size, global_batch_size=global_batch_size,
                                          dp_rank=dp_rank, dp_size=dp_size)
        self.cfg, self.manifest = _open(data_config_path)
        self.config_path, self.split, self.seq_len, self.seed = data_config_path, split, seq_len, seed
        self.micro_batch_size, self.global_batch_size = micro_batch_size, global_batch_size
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.micro_steps_per_step = self.sampler.micro_steps_per_step
        prepared = set(self.manifest.sources)
        self.source_names = [s.name for s in self.cfg.sources if s.name in prepared]
        w = {s.name: s.weight for s in self.cfg.sources if s.name in prepared}
        if weights:
            unknown = sorted(set(weights) - set(w))
            if unknown:
                raise DataError(f"weights name unknown source(s) {', '.join(unknown)}; prepared sources: "
                                f"{', '.join(self.source_names)}")
            w.update(weights)
        if not self.source_names or sum(w.values()) <= 0:
            raise DataError(f"{data_config_path}: no prepared source has a positive weight (weights {w})")
        self.weights = {n: float(w[n]) for n in self.source_names}
        self.blend = BlendIndex([self.weights[n] for n in self.source_names])
        root = self.cfg.output_path
        self.streams = [SourceStream(root, self.manifest.select(n, split), n, seq_len, seed, shuffle=True,
                                     verify=verify) if self.weights[n] > 0 else None for n in self.source_names]
        for n, st in zip(self.source_names, self.streams, strict=False):
            if st is not None and st.samples_per_epoch == 0:
                raise DataError(f"source {n} has {st.tokens} {split} tokens, fewer than seq_len + 1 = {seq_len + 1}; "
                                f"lower seq_len, prepare more data, or give it weight 0")
        self.vocab_size = self.manifest.vocab_size
        self.tokenizer_fingerprint = self.manifest.tokenizer_fingerprint
        self.tokenizer_dir = tokenizer_dir_of(self.cfg, self.manifest)
        self.data_fingerprint = self.manifest.fingerprint()

    @property
    def consumed_samples(self) -> int:
        """Global samples (over all ranks) of finished optimizer steps."""
        return self.sampler.consumed_samples

    def samples(self, start: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        sources, ks = self.blend.lookup(start, count)
        return [self.streams[s].window(k) for s, k in zip(sources, ks, strict=False)]  # type: ignore[union-attr]

    def sample_sources(self, start: int, count: int) -> np.ndarray:
        return self.blend.lookup(start, count)[0]

    def next_batch(self) -> dict[str, Any]:
        indices = self.sampler.next_indices()
        return _batch(self.samples(indices.start, len(indices)))

    def state_dict(self) -> dict[str, Any]:
        """JSON-able position: global samples consumed by finished optimizer steps."""
        return {**self.sampler.state_dict(), "seed": self.seed, "seq_len": self.seq_len,
                "split": self.split, "data_fingerprint": self.data_fingerprint, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, mine in (("seed", self.seed), ("seq_len", self.seq_len), ("data_fingerprint", self.data_fingerprint),
                          ("weights", self.weights)):
            if key in state and state[key] != mine:
                raise DataError(f"cannot resume the data loader: the checkpoint's {key} is {state[key]!r}, this run "
                                f"has {mine!r}; the same samples would not follow. Use the checkpoint's data "
                                f"and settings, or start a fresh run")
        self.sampler.load_state_dict(state)


def validation_batches(data_config_path: str, source: str, *, seq_len: int, micro_batch_size: int,
                       dp_rank: int, dp_size: int, max_batches: int) -> list[dict[str, Any]]:
    """This rank's share of the first windows of ``source``'s held-out split (same every run).

    Returns an empty list (on every rank alike) when the source has no validation split or fewer
    windows than one round of ``micro_batch_size x dp_size``; an unknown source is an error.
    """
    cfg, manifest = _open(data_config_path)
    if source not in manifest.sources:
        raise DataError(f"no source {source!r} in {cfg.output_path} (prepared sources: {', '.join(manifest.sources)})")
    shards = manifest.select(source, "validation")
    if not shards:
        return []
    stream = SourceStream(cfg.output_path, shards, source, seq_len, 0, shuffle=False)
    per_round = micro_batch_size * dp_size
    rounds = min(max_batches, stream.samples_per_epoch // per_round)
    return [_batch([stream.window(b * per_round + dp_rank * micro_batch_size + i) for i in range(micro_batch_size)])
            for b in range(rounds)]


def describe_data(data_config_path: str) -> dict[str, Any]:
    """Vocabulary, tokenizer identity and token counts of a prepared data config."""
    cfg, manifest = _open(data_config_path)
    return {"vocab_size": manifest.vocab_size, "tokenizer_fingerprint": manifest.tokenizer_fingerprint,
            "tokenizer_dir": tokenizer_dir_of(cfg, manifest), "data_fingerprint": manifest.fingerprint(),
            "sources": {n: {"train_tokens": manifest.tokens(n, "train"),
                            "validation_tokens": manifest.tokens(n, "validation")} for n in manifest.sources}}
