"""Mixtures: how many tokens each source contributes (planning) and which source each sample comes from.

:class:`BlendIndex` maps a global sample index to (source, sample within source) as a pure function
of the weights, with O(1) random access and no precomputed table. Source ``i``'s ``k``-th sample is
due at time ``(2k+1) / (2 w_i)``; global samples are these events in time order (ties by source
order). This is sequential Sainte-Laguë apportionment: after any prefix of N samples every source
has had within about one sample of ``w_i * N`` - the same goal as Megatron's greedy blending, but
computed exactly in integers from any starting position, which resume and data parallelism need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmtrain.errors import DataError

WEIGHT_SCALE = 1 << 20  # weights become integers so that event order is exact


def integer_weights(weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or not np.isfinite(w).all():
        raise DataError(f"mixture weights must be finite and >= 0, got {weights}")
    if w.sum() <= 0:
        raise DataError(f"mixture weights sum to zero ({weights}); give at least one source a positive weight")
    return np.where(w > 0, np.maximum(1, np.round(w / w.sum() * WEIGHT_SCALE)), 0).astype(np.int64)


class BlendIndex:
    """Deterministic interleaving of sources in proportion to their weights."""

    def __init__(self, weights: list[float]):
        self.w = integer_weights(weights)
        self.active = np.flatnonzero(self.w > 0)

    def _rank(self, i: int, k: np.ndarray) -> np.ndarray:
        """Global position of source i's k-th sample: k plus the events of other sources before it."""
        k = np.asarray(k, dtype=np.int64)
        rank = k.copy()
        for j in self.active:
            if j == i:
                continue
            x = (2 * k + 1) * self.w[j]  # (j,m) precedes (i,k) iff (2m+1) * w_i < (2k+1) * w_j
            # events (j,m) with (2m+1) * w_i < x, or <= x when j comes first (ties by source order)
            q = (x - 1) // self.w[i] if j > i else x // self.w[i]
            rank += (q + 1) // 2
        return rank

    def _first_at_or_after(self, i: int, position: int) -> int:
        lo, hi = 0, int(position * self.w[i] // self.w.sum()) + 2
        while self._rank(i, np.asarray([hi]))[0] < position:
            hi *= 2
        while lo < hi:
            mid = (lo + hi) // 2
            if self._rank(i, np.asarray([mid]))[0] < position:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def lookup(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(source, sample-in-source) of global samples ``start .. start+count-1``."""
        end = start + count
        sources, samples, ranks = [], [], []
        for i in self.active:
            k0 = self._first_at_or_after(int(i), start)
            n = int(count * self.w[i] // self.w.sum()) + 2
            while True:
                ks = np.arange(k0, k0 + n, dtype=np.int64)
                r = self._rank(int(i), ks)
                if r[-1] >= end:
                    break
                n *= 2
            sel = r < end
            sources.append(np.full(int(sel.sum()), i, dtype=np.int64))
            samples.append(ks[sel])
            ranks.append(r[sel])
        r = np.concatenate(ranks)
        order = np.argsort(r, kind="stable")
        if len(r) != count or (r[order] != np.arange(start, end)).any():
            raise AssertionError("blend index is not a bijection; please report this bug")
        return np.concatenate(sources)[order], np.concatenate(samples)[order]

    def counts(self, n: int) -> np.ndarray:
        """Samples drawn from each source among the first n."""
        out = np.zeros(len(self.w), dtype=np.int64)
        for i in self.active:
            out[i] = self._first_at_or_after(int(i), n)
        return out


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
