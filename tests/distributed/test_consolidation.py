"""``checkpoint.consolidate``: which saves carry ``model.safetensors`` (streamed layer by layer at ZeRO-3),
the save time in the log, and a run that never consolidated exports the same weights as one that did."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from clitools import run_cli, tiny_train_args, torchrun
from safetensors.torch import load_file

STEPS = ("step_000002", "step_000004")


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    ck = tmp_path_factory.mktemp("ck")
    logs = {}
    for policy in ("every", "final", "never"):
        p = torchrun(2, tiny_train_args(tiny_data, ck, "train.zero_stage=3", "train.max_steps=4", "checkpoint.every=2",
                                        "checkpoint.keep_last=0", f"checkpoint.consolidate={policy}", run_name=policy))
        logs[policy] = p.stdout + p.stderr
    return ck, logs


def test_which_saves_consolidate(runs):
    ck, logs = runs
    have = {policy: [s for s in STEPS if (ck / policy / s / "model.safetensors").is_file()] for policy in logs}
    assert have == {"every": list(STEPS), "final": ["step_000004"], "never": []}
    for policy in logs:  # the architecture is recorded either way (resume and export read it)
        assert all((ck / policy / s / "model.yaml").is_file() for s in STEPS)
    assert "saved step_000002: engine states" in logs["every"]
    assert "consolidated weights" in logs["every"] and "streamed layer by layer" in logs["every"]
    assert ("saved step_000002: engine states" in logs["final"]
            and "no consolidated weights (checkpoint.consolidate=final" in logs["final"])
    assert "no consolidated weights (checkpoint.consolidate=never" in logs["never"]


def test_streamed_weights_equal_the_engine_states(runs):
    from llmtrain.engine.states import consolidate_deepspeed

    ck, _ = runs
    step = ck / "every" / "step_000004"
    streamed = load_file(str(step / "model.safetensors"))
    states = {k: v for k, v in consolidate_deepspeed(step).items() if not k.startswith("rope.")}
    assert streamed.keys() == states.keys() and len(streamed) == 21
    assert all(torch.equal(streamed[k], states[k]) for k in streamed)


@pytest.mark.parametrize("step", STEPS)
def test_never_consolidated_run_exports_the_same_weights(runs, tmp_path, step):
    ck, _ = runs
    out = {}
    for policy in ("every", "never"):
        args = ["export", "--checkpoint", str(ck / policy / step), "--out", str(tmp_path / policy), "--dtype", "fp32"]
        if policy == "never":
            refused = run_cli(args, check=False)
            assert refused.returncode == 2 and "--from-deepspeed-states" in refused.stderr
            args.append("--from-deepspeed-states")
        run_cli(args)
        out[policy] = load_file(str(tmp_path / policy / "model.safetensors"))
    assert out["every"].keys() == out["never"].keys()
    assert all(torch.equal(out["every"][k], out["never"][k]) for k in out["every"])
