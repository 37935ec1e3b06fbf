"""Mixtures: how many tokens each source contributes (planning) and which source each sample comes from.

:class:`BlendIndex` maps a global sample index to (source, sample within source) as a pure function
of the weights. Source ``i``'s ``k``-th sample is due at time ``(2k+1) / (2 w_i)``; global samples
are these events in time order (ties by source order). This is sequential Sainte-Laguë
apportionment: after any prefix of N samples every source has had within about one sample of
``w_i * N`` - the same goal as Megatron's greedy blending, but computed exactly in integers from any
starting position, which resume and data parallelism need.

Lookup cost is independent of the position: the number of source-``i`` events before time ``p / W``
(``W`` = sum of weights) is one integer division, and these counts sum to within ``S/2`` of ``p``
(``S`` sources). So the events of positions ``[a, b)`` are among those with times in
``[(a - S) / W, (b + S) / W)``: about ``b - a + 3S`` candidates, ordered exactly (a float sort
checked pair by pair with integer cross-multiplication). Lookups are served from cached blocks of
at least ``32 S`` positions, so the ``O(S)`` set-up is amortised to O(1) per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cmp_to_key

import numpy as np

from llmtrain.errors import DataError

WEIGHT_SCALE = 1 << 20  # weights become integers so that event order is exact
MAX_POSITION = (1 << 62) // (2 * (WEIGHT_SCALE + 4096))  # int64 room for 2 * position * weight (~2.2e12)


def integer_weights(weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or not np.isfinite(w).all():
        raise DataError(f"mixture weights must be finite and >= 0, got {weights}")
    if w.sum() <= 0:
        raise DataError(f"mixture weights sum to zero ({weights}); give at least one source a positive weight")
    return np.where(w > 0, np.maximum(1, np.round(w / w.sum() * WEIGHT_SCALE)), 0).astype(np.int64)


class BlendIndex:
    """Deterministic interleaving of sources in proportion to their weights."""

    def __init__(self, weights: list[float], *, block: int | None = None):
        self.w = integer_weights(weights)
        if len(self.w) > 4096:
            raise DataError(f"a mixture of {len(self.w)} sources is more than the 4096 the blend index supports; "
                            "merge small sources into one before training")
        self.active = np.flatnonzero(self.w > 0)
        self._wa = self.w[self.active]
        self._W = int(self.w.sum())
        self.block = block or max(4096, 32 * len(self.active))
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _before(self, p: int) -> np.ndarray:
        """Per active source: its events with time < p / W, i.e. k with (2k+1) W < 2 p w_i."""
        return (2 * p * self._wa - 1 - self._W) // (2 * self._W) + 1

    def _events(self, start: int, stop: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(m, sources, samples): every event at global positions m .. with m <= start, in exact order,
        reaching at least position ``stop``."""
        if stop > MAX_POSITION:
            raise DataError(f"blend position {stop} is beyond the {MAX_POSITION:.3g} samples the blend index "
                            "can address exactly")
        n_src = len(self.active)
        p0 = max(0, start - n_src)
        lo, hi = self._before(p0), self._before(stop + n_src)
        num = hi - lo
        total = int(num.sum())
        idx = np.repeat(np.arange(n_src), num)
        k = np.repeat(lo - (np.cumsum(num) - num), num) + np.arange(total, dtype=np.int64)
        wk = self._wa[idx]
        # event time minus p0 / W, times 2 W w_i: an exact, small non-negative integer
        numer = (2 * k + 1) * self._W - 2 * p0 * wk
        order = np.lexsort((idx, numer / wk))
        a, b = order[:-1], order[1:]
        left, right = numer[a] * wk[b], numer[b] * wk[a]  # a before b iff t_a < t_b, or equal and i_a < i_b
        if ((left > right) | ((left == right) & (idx[a] > idx[b]))).any():
            order = _exact_order(numer, wk, idx)  # a float rounding put two near-equal times out of order
        return int(lo.sum()), self.active[idx[order]], k[order]

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        if b not in self._blocks:
            start = b * self.block
            m, src, k = self._events(start, start + self.block)
            if len(self._blocks) >= 2:  # lookups of one step touch at most two neighbouring blocks
                self._blocks.pop(min(self._blocks))
            self._blocks[b] = (src[start - m: start - m + self.block], k[start - m: start - m + self.block])
        return self._blocks[b]

    def lookup(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(source, sample-in-source) of global samples ``start .. start+count-1``."""
        if start < 0 or count < 0:
            raise ValueError(f"blend lookup needs start >= 0 and count >= 0, got {start}, {count}")
        if count > self.block:
            m, src, k = self._events(start, start + count)
            return src[start - m: start - m + count], k[start - m: start - m + count]
        parts = []
        for b in range(start // self.block, (start + count - 1) // self.block + 1 if count else start // self.block):
            src, k = self._block(b)
            lo, hi = max(start - b * self.block, 0), min(start + count - b * self.block, self.block)
            parts.append((src[lo:hi], k[lo:hi]))
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def counts(self, n: int) -> np.ndarray:
        """Samples drawn from each source among the first n."""
        m, src, _ = self._events(n, n)
        out = np.zeros(len(self.w), dtype=np.int64)
        out[self.active] = self._before(max(0, n - len(self.active)))
        np.add.at(out, src[: n - m], 1)
        return out


def _exact_order(numer: np.ndarray, wk: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The order of events by exact time (integer cross-multiplication), ties by source."""
    def cmp(a: int, b: int) -> int:
        left, right = int(numer[a]) * int(wk[b]), int(numer[b]) * int(wk[a])
        return -1 if left < right else 1 if left > right else int(idx[a]) - int(idx[b])

    return np.asarray(sorted(range(len(numer)), key=cmp_to_key(cmp)), dtype=np.int64)


@dataclass
class PlanRow:
    source: str
    tokens_available: float
    weight: float
    tokens_drawn: float
    epochs: float
    max_epochs: float | None


@dataclass
class MixturePlan:
    """Per-source tokens drawn and epochs for a token budget."""

    budget: float
    rows: list[PlanRow]

    @classmethod
    def build(cls, budget: float, sources: list[tuple[str, float, float, float | None]]) -> MixturePlan:
        """``sources``: (name, tokens available, weight, max_epochs or None)."""
        if not sources:
            raise DataError("the mixture is empty: list at least one source")
        if budget <= 0:
            raise DataError(f"the token budget must be > 0, got {budget}")
        total = sum(w for _, _, w, _ in sources)
        if any(w < 0 for _, _, w, _ in sources) or total <= 0:
            raise DataError(f"weights must be >= 0 and sum to more than zero, got "
                            f"{', '.join(f'{n}={w}' for n, _, w, _ in sources)}")
        rows = []
        for name, avail, w, cap in sources:
            drawn = budget * w / total
            if avail <= 0 and drawn > 0:
                raise DataError(f"source {name} has no tokens but weight {w}; prepare it or set its weight to 0")
            rows.append(PlanRow(name, avail, w / total, drawn, drawn / avail if avail else 0.0, cap))
        return cls(budget, rows)

    def violations(self) -> list[PlanRow]:
        return [r for r in self.rows if r.max_epochs is not None and r.epochs > r.max_epochs]

    def check_caps(self) -> None:
        bad = self.violations()
        if bad:
            lines = "; ".join(f"{r.source}: {r.tokens_drawn:.4g} tokens drawn from {r.tokens_available:.4g} available "
                              f"= {r.epochs:.2f} epochs > max_epochs {r.max_epochs}" for r in bad)
            raise DataError(f"the plan for {self.budget:.4g} tokens repeats sources beyond their cap: {lines}. "
                            "Lower those weights or the budget, add data, or raise max_epochs")
