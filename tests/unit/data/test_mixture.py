import numpy as np
import pytest

from llmtrain.data.mixture import BlendIndex, MixturePlan
from llmtrain.errors import DataError


def test_blend_is_a_bijection_from_any_start():
    b = BlendIndex([0.5, 0.3, 0.2, 0.0])
    src, k = b.lookup(0, 1000)
    assert set(src.tolist()) == {0, 1, 2}  # a zero weight is never drawn
    for i in range(3):  # each source's samples come in order 0, 1, 2, ... without gaps
        assert k[src == i].tolist() == list(range(int((src == i).sum())))
    s2, k2 = b.lookup(333, 250)
    assert (s2 == src[333:583]).all() and (k2 == k[333:583]).all()
    assert b.counts(1000).tolist() == np.bincount(src, minlength=4).tolist()


def test_realized_proportions_track_weights():
    w = [0.6082, 0.1913, 0.0810, 0.0804, 0.0401]
    b = BlendIndex(w)
    for start, n in ((0, 10_000), (10**9, 4096)):
        src, _ = b.lookup(start, n)
        realized = np.bincount(src, minlength=5) / n
        # deterministic apportionment: within ~2 samples per source of w*n, far inside sampling error
        assert np.abs(realized - np.asarray(w) / sum(w)).max() * n <= 2.0
    assert np.abs(b.counts(10**12) / 1e12 - np.asarray(w) / sum(w)).max() < 1e-6


def test_bad_weights():
    with pytest.raises(DataError, match="sum to zero"):
        BlendIndex([0.0, 0.0])
    with pytest.raises(DataError, match=">= 0"):
        BlendIndex([1.0, -0.5])


GPT3 = [("common_crawl", 410.49e9, 0.6082, None), ("webtext2", 19.49e9, 0.1913, None),
        ("books1", 12.49e9, 0.0810, None), ("books2", 55.49e9, 0.0804, None), ("wikipedia", 3.49e9, 0.0401, None)]
PAPER_EPOCHS = [0.44, 2.9, 1.9, 0.43, 3.4]


def test_gpt3_epochs_within_the_papers_rounding():
    plan = MixturePlan.build(300e9, GPT3)
    for row, paper in zip(plan.rows, PAPER_EPOCHS, strict=False):
        digits = 2 if paper < 1 else 1
        assert round(row.epochs, digits) == paper, (row.source, row.epochs)
    assert sum(r.tokens_drawn for r in plan.rows) == pytest.approx(300e9)


def test_repetition_cap_refused_with_numbers():
    plan = MixturePlan.build(300e9, [(n, t, w, 3.0) for n, t, w, _ in GPT3])
    assert [r.source for r in plan.violations()] == ["wikipedia"]
    with pytest.raises(DataError, match=r"wikipedia: 1.202e\+10 tokens drawn from 3.49e\+09 available = 3.44 epochs "
                                        r"> max_epochs 3.0"):
        plan.check_caps()


def test_plan_rejects_empty_and_bad_weights():
    with pytest.raises(DataError, match="empty"):
        MixturePlan.build(1e9, [])
    with pytest.raises(DataError, match="sum to more than zero"):
        MixturePlan.build(1e9, [("a", 1e9, 0.0, None)])
    with pytest.raises(DataError, match="a=-1"):
        MixturePlan.build(1e9, [("a", 1e9, -1.0, None), ("b", 1e9, 2.0, None)])


def _reference_position(w: np.ndarray, i: int, k: int) -> int:
    """The definition: source i's k-th sample is preceded by its own k samples and by every event (j, m)
    of another source with an earlier time (2m+1)/(2 w_j), or the same time and j < i."""
    pos = k
    for j, wj in enumerate(w.tolist()):
        if j == i or wj == 0:
            continue
        x = (2 * k + 1) * wj  # (j, m) precedes iff (2m+1) w_i < x (or <= x when j < i)
        q = (x - 1) // int(w[i]) if j > i else x // int(w[i])
        pos += (q + 1) // 2
    return pos


@pytest.mark.parametrize("n_sources", [1, 2, 5, 50, 200])
def test_lookup_matches_the_definition_at_random_positions(n_sources):
    rng = np.random.default_rng(n_sources)
    weights = rng.random(n_sources).tolist()
    if n_sources > 2:
        weights[1] = 0.0
    b = BlendIndex(weights)
    starts = [0, 1, *rng.integers(0, 10**6, 3).tolist(), *rng.integers(0, 10**12, 3).tolist()]
    for start in starts:
        count = int(rng.integers(1, 64))
        src, k = b.lookup(start, count)
        assert [_reference_position(b.w, int(s), int(j)) for s, j in zip(src, k, strict=True)] == \
            list(range(start, start + count))
        # a cold index (no cached block) and a lookup longer than a block agree with the cached one
        s2, k2 = BlendIndex(weights, block=7).lookup(start, count)
        assert (s2 == src).all() and (k2 == k).all()
    assert b.counts(starts[-1]).sum() == starts[-1]


def test_equal_weights_break_ties_by_source_order():
    src, k = BlendIndex([1.0, 1.0, 1.0]).lookup(0, 9)
    assert src.tolist() == [0, 1, 2] * 3 and k.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_exact_order_agrees_with_the_float_sort_and_repairs_it():
    from llmtrain.data.mixture import _exact_order

    rng = np.random.default_rng(0)
    wk = rng.integers(1, 1 << 20, 400)
    idx = rng.integers(0, 50, 400)
    numer = rng.integers(0, 1 << 30, 400)
    numer[1::2] = numer[::2] // wk[::2] * wk[1::2]  # many exactly equal times: ties go by source
    order = _exact_order(numer, wk, idx)
    from fractions import Fraction
    assert order.tolist() == sorted(range(400), key=lambda a: (Fraction(int(numer[a]), int(wk[a])), int(idx[a])))
    # two times 1 ulp apart in float64 but distinct as rationals: the float sort alone would tie them
    big = np.asarray([(1 << 53) + 1, 1 << 53], dtype=np.int64)
    assert _exact_order(big, np.asarray([1, 1]), np.asarray([0, 1])).tolist() == [1, 0]


def test_positions_beyond_int64_room_are_refused():
    from llmtrain.data.mixture import MAX_POSITION

    with pytest.raises(DataError, match="beyond"):
        BlendIndex([1.0, 2.0]).lookup(MAX_POSITION, 1)
