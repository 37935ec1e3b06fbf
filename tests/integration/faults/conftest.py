"""Fixtures of the failure tests; the tools they use live in faultkit.py (importable from here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from clitools import losses_by_step, run_cli, tiny_train_args, torchrun  # noqa: E402
from faultkit import EVERY  # noqa: E402


@pytest.fixture(scope="session")
def reference_losses(tiny_data, tmp_path_factory) -> dict[int, float]:
    """Per-step losses of the uninterrupted 8-step 2-rank run (checkpoint every 2 steps)."""
    ckpt = tmp_path_factory.mktemp("reference")
    torchrun(2, tiny_train_args(tiny_data, ckpt, *EVERY))
    losses = losses_by_step(ckpt / "t")
    assert sorted(losses) == list(range(1, 9))
    return losses


@pytest.fixture(scope="session")
def base_run(tiny_data, tmp_path_factory) -> Path:
    """checkpoint.dir of a finished 2-step single-process ZeRO-1 run (run name `t`); copy it before changing it."""
    ckpt = tmp_path_factory.mktemp("base")
    run_cli(tiny_train_args(tiny_data, ckpt, "train.zero_stage=1", "train.max_steps=2"))
    return ckpt
