"""Blend lookup time per micro-batch: the previous per-source binary search vs the current index.

For each number of sources (5, 20, 50, 200 by default) and consumed-sample position (1e6, 1e9),
times the lookup of one micro-batch's (source, sample-in-source) pairs as a data-parallel rank
makes it (its micro-batches are ``micro_batch x dp`` apart), old and new side by side in one run,
and checks that both return the same pairs. Target: <= 1 ms per micro-batch.

    python benchmarks/bench_blend.py
    python benchmarks/bench_blend.py --sources 5 50 --positions 1e6 1e9 1e12 --old-max-sources 50
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from llmtrain.data.mixture import BlendIndex, integer_weights


class PreviousBlendIndex:
    """The lookup before issue 17: per source, a binary search over an O(S) rank function."""

    def __init__(self, weights: list[float]):
        self.w = integer_weights(weights)
        self.active = np.flatnonzero(self.w > 0)

    def _rank(self, i: int, k: np.ndarray) -> np.ndarray:
        k = np.asarray(k, dtype=np.int64)
        rank = k.copy()
        for j in self.active:
            if j == i:
                continue
            x = (2 * k + 1) * self.w[j]
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
        order = np.argsort(np.concatenate(ranks), kind="stable")
        return np.concatenate(sources)[order], np.concatenate(samples)[order]


def per_microbatch_ms(index, position: int, micro_batch: int, stride: int, repeats: int) -> float:
    t = time.perf_counter()
    for r in range(repeats):
        index.lookup(position + r * stride, micro_batch)
    return (time.perf_counter() - t) / repeats * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", type=int, nargs="+", default=[5, 20, 50, 200])
    p.add_argument("--positions", type=float, nargs="+", default=[1e6, 1e9])
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--dp", type=int, default=64, help="data-parallel ranks (stride between one rank's micro-batches)")
    p.add_argument("--repeats", type=int, default=2000, help="micro-batches timed for the new index")
    p.add_argument("--old-repeats", type=int, default=3)
    p.add_argument("--old-max-sources", type=int, default=200, help="skip the old lookup above this many sources")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    stride = args.micro_batch * args.dp
    print(f"blend lookup per micro-batch of {args.micro_batch} samples, one rank of {args.dp} "
          f"(new: mean over {args.repeats} consecutive micro-batches, cold caches included)")
    print(f"{'sources':>7} {'position':>9} {'old ms':>10} {'new ms':>9} {'speed-up':>9}  same pairs")
    for n in args.sources:
        weights = (rng.random(n) + 0.01).tolist()
        for pos in (int(x) for x in args.positions):
            new = per_microbatch_ms(BlendIndex(weights), pos, args.micro_batch, stride, args.repeats)
            if n <= args.old_max_sources:
                old_index = PreviousBlendIndex(weights)
                old = per_microbatch_ms(old_index, pos, args.micro_batch, stride, args.old_repeats)
                a, b = old_index.lookup(pos, args.micro_batch), BlendIndex(weights).lookup(pos, args.micro_batch)
                same = "yes" if (a[0] == b[0]).all() and (a[1] == b[1]).all() else "NO"
                print(f"{n:>7} {pos:>9.0e} {old:>10.2f} {new:>9.4f} {old / new:>8.0f}x  {same}")
            else:
                print(f"{n:>7} {pos:>9.0e} {'skipped':>10} {new:>9.4f} {'':>9}")


if __name__ == "__main__":
    main()
