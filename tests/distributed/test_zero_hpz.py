"""ZeRO++ hierarchical partitioning (``train.zero_hpz_partition_size``) on 4 gloo ranks as 2 "nodes" x 2:
DeepSpeed forms the secondary partition groups, training and the consolidating save run, and the
losses are those of plain ZeRO-3 (hpZ changes where parameters are gathered from, not the math)."""

from __future__ import annotations

import pytest
from clitools import losses_by_step, tiny_train_args, torchrun


def test_hpz_on_two_groups_of_two_matches_plain_zero3(tiny_data, tmp_path):
    runs = {}
    for hpz in (1, 2):
        p = torchrun(4, tiny_train_args(tiny_data, tmp_path, "train.zero_stage=3", "train.max_steps=3",
                                        f"train.zero_hpz_partition_size={hpz}", run_name=f"hpz{hpz}"))
        runs[hpz] = losses_by_step(tmp_path / f"hpz{hpz}")
        announced = "ZeRO++ hierarchical partitioning: a secondary parameter partition over groups of 2 ranks (2 groups)"
        assert (announced in p.stdout + p.stderr) == (hpz == 2)
    assert (tmp_path / "hpz2" / "step_000003" / "model.safetensors").is_file()
    assert runs[2][1] == runs[1][1]
    assert runs[2] == pytest.approx(runs[1], rel=1e-4)
