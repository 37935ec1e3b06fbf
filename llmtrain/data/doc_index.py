"""Per-epoch document tables of a source, built once on disk and memory-mapped by every rank.

A source's packed stream needs, per epoch, the shuffled document order, the cumulative token counts
in that order and the shuffled window order: three arrays the size of the document (and window)
count. Held in every rank's memory they cost tens of bytes per document per rank and seconds to
minutes to rebuild at every restart. Instead, the first process that needs an epoch's tables
builds them (the same arrays, bit for bit, as the in-memory definition) into
``<prepared dir>/index/`` under an exclusive lock file, writes them to a temporary directory and
renames it into place; every other process waits for that directory (a file, not a collective, so
ranks that reach the loader at different times cannot deadlock) and memory-maps the arrays. The
page cache then holds one copy per node, shared by its ranks.

Directory names carry a hash of the shard list (file, sha256, document count), the seed, the
sequence length and the epoch, so a re-prepared source or another run setting never reuses stale
tables. Where the prepared directory is read-only the tables are built in memory (the old cost,
with a warning).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from llmtrain.distributed.logging import get_logger
from llmtrain.errors import DataError

log = get_logger(__name__)

INDEX_DIR = "index"
TABLES = ("doc_order", "cum", "sample_order")
WAIT_ENV = "LLMTRAIN_INDEX_WAIT_S"  # how long a process waits for another one's build (default 1800 s)
_warned: set[str] = set()

Tables = dict[str, np.ndarray]


def epoch_tables(doc_len: np.ndarray, samples_per_epoch: int, *, seed: int, name: str, epoch: int,
                 shuffle: bool) -> Tables:
    """The definition: document order, cumulative lengths in that order, window order of one epoch."""
    n = len(doc_len)
    if shuffle:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode()), epoch])
        doc_order = rng.permutation(n)
        sample_order = rng.permutation(samples_per_epoch)
    else:
        doc_order, sample_order = np.arange(n), np.arange(samples_per_epoch)
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(doc_len[doc_order], out=cum[1:])
    small = np.int32 if max(n, samples_per_epoch) < 2**31 else np.int64  # values only: same order
    return {"doc_order": doc_order.astype(small), "cum": cum, "sample_order": sample_order.astype(small)}


def tables_key(shards: list[tuple[str, str, int]], *, name: str, split: str, seed: int, seq_len: int,
               shuffle: bool) -> str:
    """Directory name (without the epoch) identifying the tables of one source stream."""
    h = hashlib.sha256(f"v1:{name}:{split}:{seed}:{seq_len}:{shuffle}".encode())
    for file, sha, docs in shards:
        h.update(f"|{file}:{sha}:{docs}".encode())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"{safe}-{split}-{h.hexdigest()[:16]}"


def shared_tables(root: Path, key: str, epoch: int, build: Callable[[], Tables]) -> Tables:
    """The tables in ``root/index/key/epoch_<e>``, built by whichever process gets there first."""
    final = Path(root) / INDEX_DIR / key / f"epoch_{epoch:05d}"
    if not final.is_dir():
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return _in_memory(root, build, e)
        lock = final.with_name(final.name + ".lock")
        if _acquire(lock, final):
            try:
                _write(final, build())
            except OSError as e:
                return _in_memory(root, build, e)
            finally:
                lock.unlink(missing_ok=True)
    return {t: np.load(final / f"{t}.npy", mmap_mode="r") for t in TABLES}


def _in_memory(root: Path, build: Callable[[], Tables], err: OSError) -> Tables:
    if str(root) not in _warned:
        _warned.add(str(root))
        log.warning(f"[llmtrain] cannot write the document index into {Path(root) / INDEX_DIR} ({err}); every "
                    "process builds it in memory instead. Make the prepared directory writable to share it.")
    return build()


def _acquire(lock: Path, final: Path) -> bool:
    """True: this process builds. False: another one built it meanwhile (``final`` exists)."""
    deadline = time.monotonic() + float(os.environ.get(WAIT_ENV, "1800"))
    me = f"{socket.gethostname()} {os.getpid()}"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if final.is_dir():
                return False
            if _holder_is_gone(lock):
                lock.unlink(missing_ok=True)
                continue
            if time.monotonic() > deadline:
                raise DataError(f"waited {os.environ.get(WAIT_ENV, '1800')} s for another process to build the "
                                f"document index {final} (lock {lock}: {_read(lock) or 'unreadable'}). If no "
                                f"process builds it any more, delete {lock}; raise {WAIT_ENV} for very large "
                                "sources") from None
            time.sleep(0.05)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        if final.is_dir():  # built between our check and the lock
            lock.unlink(missing_ok=True)
            return False
        return True


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _holder_is_gone(lock: Path) -> bool:
    """A lock left by a dead process on this host (killed while building) can be taken over."""
    host, _, pid = _read(lock).partition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _write(final: Path, tables: Tables) -> None:
    tmp = final.with_name(f".{final.name}.tmp.{socket.gethostname()}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for t in TABLES:
        with open(tmp / f"{t}.npy", "wb") as f:
            np.save(f, np.ascontiguousarray(tables[t]))
            f.flush()
            os.fsync(f.fileno())
    try:
        os.rename(tmp, final)  # atomic: a directory named epoch_* is complete
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
