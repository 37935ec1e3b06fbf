"""A prefetching wrapper around any batch source (pretraining loader, fine-tuning iterator).

``data.num_workers = N > 0``: a background thread keeps up to N batches ready, so reading shards,
packing and collating overlap forward and backward instead of adding to the step. A thread, not
processes, because the work is memory-mapped reads and numpy copies that release the GIL, and a
thread shares the loader's position without pickling.

The wrapped source runs ahead of the loop, so its own position is not what a checkpoint must hold:
each prefetched batch travels with the source's ``state_dict()`` taken right after it was made, and
:meth:`PrefetchLoader.state_dict` returns the one of the last batch *delivered* to the loop. A save
therefore records exactly what the loop consumed, and a resume continues with the same batches
whatever the prefetch depth. ``data_wait_s`` counts the time ``next_batch`` kept the caller waiting
(the data-wait the per-rank timing reports), with or without prefetching.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

_STOP_POLL_S = 0.1


class PrefetchLoader:
    """``source``'s batches in the same order, ``depth`` of them made ahead in a background thread."""

    def __init__(self, source: Any, depth: int, *, pin_memory: bool = False) -> None:
        if depth < 0:
            raise ValueError(f"prefetch depth (data.num_workers) must be >= 0, got {depth}")
        self.source, self.depth, self.pin_memory = source, depth, pin_memory
        self.micro_steps_per_step: int = source.micro_steps_per_step
        self.data_wait_s = 0.0
        self.batches = 0
        self._queue: queue.Queue[Any] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._delivered: dict[str, Any] | None = None  # source state after the last delivered batch
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        # vocab_size, source_names, ...: read-only facts of the source (not its running position)
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    # ---- batches --------------------------------------------------------------------------------
    def next_batch(self) -> Any:
        if self._closed:
            raise RuntimeError("this PrefetchLoader was closed; its source ran ahead of the delivered batches. "
                               "Call load_state_dict(state_dict()) at a step boundary to continue")
        t = time.perf_counter()
        if self.depth == 0:
            batch = self._make()
        else:
            if self._thread is None:
                self._start()
            assert self._queue is not None
            item = self._queue.get()
            if isinstance(item, BaseException):
                assert self._thread is not None
                self._thread.join()  # it returns right after handing over the error
                self._thread = None
                raise item
            batch, self._delivered = item
        self.data_wait_s += time.perf_counter() - t
        self.batches += 1
        return batch

    def _make(self) -> Any:
        batch = self.source.next_batch()
        if self.pin_memory:
            batch = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in batch.items()}
        return batch

    def _start(self) -> None:
        self._delivered = self.source.state_dict()
        self._stop.clear()
        self._queue = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(target=self._produce, args=(self._queue, self._stop),
                                        name="llmtrain-prefetch", daemon=True)
        self._thread.start()

    def _produce(self, q: queue.Queue[Any], stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                item: Any = (self._make(), self.source.state_dict())
            except BaseException as e:  # noqa: BLE001 (re-raised in the loop's thread by next_batch)
                item = e
            while not stop.is_set():
                try:
                    q.put(item, timeout=_STOP_POLL_S)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def close(self) -> None:
        """Stop the background thread and drop the batches it made ahead (the source stays ahead, so
        only :meth:`load_state_dict` makes the loader usable again)."""
        if self._thread is None:
            return
        self._closed = True
        self._stop.set()
        self._thread.join()
        self._thread, self._queue = None, None

    # ---- position -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The source's position after the last batch delivered to the caller."""
        if self._thread is None and self._delivered is None:
            return self.source.state_dict()
        assert self._delivered is not None
        return dict(self._delivered)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.close()
        self.source.load_state_dict(state)
        self._delivered, self._closed = None, False

    @property
    def consumed_samples(self) -> int:
        return int(self.state_dict()["consumed_samples"])
