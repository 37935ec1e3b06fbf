"""Resuming under another ZeRO stage is refused before anything is written; a failed universal
conversion leaves nothing behind.

DeepSpeed 0.19 cannot carry optimizer states across stages (see llmtrain/engine/resume.py): before,
resuming a ZeRO-1 checkpoint with train.zero_stage=3 converted it, then died in an AssertionError and
left a ``*_universal`` folder and a ``latest_universal`` naming a missing ``*.tmp`` folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from clitools import tiny_train_args, torchrun


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("saved", "now"), [(1, 3), (3, 1)])
def test_another_zero_stage_is_refused_before_anything_is_written(tiny_data, tmp_path, saved, now):
    run = tmp_path / "t"
    torchrun(2, tiny_train_args(tiny_data, tmp_path, f"train.zero_stage={saved}", "train.exit_after_steps=4"))
    before = hashes(run)

    p = torchrun(2, tiny_train_args(tiny_data, tmp_path, f"train.zero_stage={now}"), check=False)
    assert p.returncode != 0
    step = run / "step_000004"
    assert (f"llmtrain train: error: cannot resume from {step}: it was written with ZeRO stage {saved} and "
            f"train.zero_stage is now {now}") in p.stderr
    assert f"Resume with --set train.zero_stage={saved}" in p.stderr
    assert "AssertionError" not in p.stderr and '[rank0]:   File "' not in p.stderr  # no worker traceback
    assert hashes(run) == before  # nothing written, nothing converted
    assert not list(run.glob("*universal*"))

    again = torchrun(2, tiny_train_args(tiny_data, tmp_path, f"train.zero_stage={saved}"))
    assert f"resumed from {step} at step 4" in again.stdout
    assert json.loads((run / "step_000008" / "trainer_state.json").read_text())["step"] == 8


def test_a_failed_universal_conversion_leaves_nothing_behind(tmp_path):
    """A step directory DeepSpeed cannot convert (here: no ZeRO optimizer states): a CheckpointError
    naming it, and no ``*_universal``, ``*_universal.tmp`` or ``latest_universal`` afterwards."""
    from llmtrain.engine.reshard import make_universal
    from llmtrain.errors import CheckpointError

    step = tmp_path / "run" / "step_000004"
    step.mkdir(parents=True)
    (step / "trainer_state.json").write_text("{}")
    with pytest.raises(CheckpointError, match=f"converting {step} to a universal checkpoint .* failed; nothing was kept"):
        make_universal(step)
    assert sorted(p.name for p in step.parent.iterdir()) == ["step_000004"]
