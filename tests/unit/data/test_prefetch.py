"""The prefetching wrapper: same batches, and a state that describes what was delivered, not made."""

import threading

import pytest
import torch

from llmtrain.data.finetune_loader import FinetuneBatchIterator
from llmtrain.data.loader import PretrainLoader
from llmtrain.data.prefetch import PrefetchLoader
from llmtrain.errors import DataError

SEQ, MB, G = 16, 2, 8


def _pretrain(config):
    return PretrainLoader(config, seq_len=SEQ, micro_batch_size=MB, global_batch_size=G, dp_rank=0, dp_size=2, seed=3)


def _run(loader, n):
    """n batches, and the state after each."""
    out = []
    for _ in range(n):
        b = loader.next_batch()
        out.append(({k: v.clone() for k, v in b.items()}, loader.state_dict()))
    return out


@pytest.mark.parametrize("depth", [0, 1, 3, 8])
def test_same_batches_and_states_as_without_prefetch(prepared_corpus, depth):
    plain = _run(_pretrain(prepared_corpus), 9)
    pre = PrefetchLoader(_pretrain(prepared_corpus), depth)
    fetched = _run(pre, 9)
    for (a, sa), (b, sb) in zip(plain, fetched, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a) and sa == sb
    if depth:  # the source ran ahead of what was delivered; the state did not
        assert pre.source.consumed_samples >= pre.consumed_samples == plain[-1][1]["consumed_samples"] == 4 * G
    assert pre.vocab_size == 400 and pre.batches == 9 and pre.data_wait_s > 0
    pre.close()


def test_resume_from_a_prefetching_loader_is_exact(prepared_corpus):
    reference = _run(_pretrain(prepared_corpus), 12)
    first = PrefetchLoader(_pretrain(prepared_corpus), 4)
    _run(first, 2)  # one optimizer step (2 micro batches per rank); the thread is ahead by up to 4 more
    state = first.state_dict()
    first.close()
    with pytest.raises(RuntimeError, match="closed"):
        first.next_batch()
    assert state["consumed_samples"] == G
    for depth in (0, 2):
        resumed = PrefetchLoader(_pretrain(prepared_corpus), depth)
        resumed.load_state_dict(state)
        rest = _run(resumed, 8)
        assert all(torch.equal(a[0]["input_ids"], b[0]["input_ids"]) for a, b in zip(reference[2:10], rest, strict=True))
        resumed.close()
    # reloading a running loader rewinds it: the prefetched batches are dropped
    first.load_state_dict(state)
    assert torch.equal(first.next_batch()["input_ids"], reference[2][0]["input_ids"])
    first.close()


def test_fine_tuning_iterator_is_wrapped_the_same_way():
    data = [{"input_ids": [i, i + 1, i + 2], "labels": [i, i + 1, i + 2]} for i in range(20)]
    make = lambda: FinetuneBatchIterator(data, seq_len=4, micro_batch_size=2, global_batch_size=4, dp_rank=0,  # noqa: E731
                                         dp_size=1, seed=0, pad_id=0)
    wrapped = PrefetchLoader(make(), 2)
    plain, pre = _run(make(), 7), _run(wrapped, 7)
    wrapped.close()
    assert all(torch.equal(a["input_ids"], b["input_ids"]) and sa == sb for (a, sa), (b, sb) in zip(plain, pre, strict=True))


def test_errors_reach_the_loop_thread():
    class Failing:
        micro_steps_per_step = 1
        calls = 0

        def next_batch(self):
            self.calls += 1
            if self.calls == 3:
                raise DataError("shard x.bin is truncated")
            return {"input_ids": torch.zeros(1)}

        def state_dict(self):
            return {"consumed_samples": self.calls}

    pre = PrefetchLoader(Failing(), 4)
    pre.next_batch(), pre.next_batch()
    with pytest.raises(DataError, match="x.bin is truncated"):
        pre.next_batch()
    assert not any(t.name == "llmtrain-prefetch" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(ValueError, match="must be >= 0"):
        PrefetchLoader(Failing(), -1)
