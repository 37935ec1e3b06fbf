"""The global-batch rule: step k takes [k·G, (k+1)·G) on any data-parallel size; resume continues exactly."""

from __future__ import annotations

import json

import pytest

from llmtrain.config import ConfigError
from llmtrain.data.sampler import GlobalBatchSampler, micro_steps_per_step
from llmtrain.errors import DataError

G = 8


def _samplers(dp: int, mb: int = 2) -> list[GlobalBatchSampler]:
    return [GlobalBatchSampler(micro_batch_size=mb, global_batch_size=G, dp_rank=r, dp_size=dp) for r in range(dp)]


def _steps(samplers: list[GlobalBatchSampler], steps: int) -> list[list[int]]:
    """Per step, the indices each micro batch of each rank read, in (micro, rank) order."""
    out = []
    for _ in range(steps):
        rows: list[int] = []
        for _ in range(samplers[0].micro_steps_per_step):
            for s in samplers:
                rows += list(s.next_indices())
        out.append(rows)
    return out


def test_indices_for_dp_1_2_4():
    one = _samplers(1)[0]
    assert one.micro_steps_per_step == 4
    assert [list(one.next_indices()) for _ in range(5)] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert one.consumed_samples == G and one.micro_step == 1 and one.position == 10

    r0, r1 = _samplers(2)
    assert r0.micro_steps_per_step == 2
    assert [list(r0.next_indices()) for _ in range(3)] == [[0, 1], [4, 5], [8, 9]]
    assert [list(r1.next_indices()) for _ in range(3)] == [[2, 3], [6, 7], [10, 11]]

    four = _samplers(4)
    assert four[0].micro_steps_per_step == 1
    assert [[list(s.next_indices()) for s in four] for _ in range(2)] == [
        [[0, 1], [2, 3], [4, 5], [6, 7]], [[8, 9], [10, 11], [12, 13], [14, 15]]]
    assert all(s.consumed_samples == 2 * G and s.micro_step == 0 for s in four)


@pytest.mark.parametrize("dp", [1, 2, 4])
def test_every_step_takes_the_same_global_indices(dp):
    assert [sorted(rows) for rows in _steps(_samplers(dp), 3)] == [list(range(k * G, (k + 1) * G)) for k in range(3)]


def test_resume_on_another_dp_size_continues_exactly():
    straight = _steps(_samplers(1), 6)
    first = _samplers(4)
    done = _steps(first, 2)
    state = json.loads(json.dumps(first[0].state_dict()))
    assert state == {"consumed_samples": 2 * G}
    resumed = _samplers(2)
    for s in resumed:
        s.load_state_dict(state)
    rest = _steps(resumed, 4)
    assert [sorted(x) for x in done + rest] == [sorted(x) for x in straight]


def test_state_is_the_last_finished_step():
    s = _samplers(2)[0]
    s.next_indices()  # half of step 0
    assert s.state_dict() == {"consumed_samples": 0}  # an unfinished step is replayed on resume
    s.load_state_dict({"consumed_samples": 24})
    assert list(s.next_indices()) == [24, 25] and s.micro_step == 1
    with pytest.raises(DataError, match="not a step boundary"):
        s.load_state_dict({"consumed_samples": -8})


def test_batch_arithmetic_is_refused_with_the_fix():
    assert micro_steps_per_step(32, 4, 2) == 4
    with pytest.raises(ConfigError) as e:
        GlobalBatchSampler(micro_batch_size=4, global_batch_size=30, dp_rank=0, dp_size=2)
    assert "train.global_batch_size: 30 is not divisible by micro_batch_size x data-parallel ranks = 4 x 2 = 8" \
        in str(e.value)
    assert "train.global_batch_size=24 or 32" in str(e.value)
    with pytest.raises(ValueError, match=r"dp_rank 2 outside \[0, 2\)"):
        GlobalBatchSampler(micro_batch_size=1, global_batch_size=2, dp_rank=2, dp_size=2)
