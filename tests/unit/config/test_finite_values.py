"""NaN and infinity are refused in every numeric config value; DeepSpeed placeholders DeepSpeed cannot
resolve (``auto``) are refused by key; absurd sizes are refused by their bound."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from llmtrain.config import ConfigError, load_run_config
from llmtrain.config.base import build, field
from llmtrain.config.data import DataConfig


def _problems(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        load_run_config(None, overrides)
    return str(e.value)


@pytest.mark.parametrize("value", ["nan", ".nan", "NaN", "inf", ".inf", "-.inf", "1e999"])
def test_non_finite_numbers_are_refused(value):
    assert f"optim.lr: must be a finite number, got {float(value.lstrip('.').replace('-.', '-')) if value != '-.inf' else float('-inf')}" \
        in _problems([f"optim.lr={value}"])


def test_every_problem_names_its_key():
    msg = _problems(["optim.lr=nan", "optim.weight_decay=.inf", "data.weights={a: .nan, b: 1.0}", "train.max_steps=.nan",
                     "model.vocab_size=1000000000000"])
    for text in ("optim.lr: must be a finite number, got nan", "optim.weight_decay: must be a finite number, got inf",
                 "data.weights.a: must be a finite number, got nan", "train.max_steps: expected an integer, got float nan",
                 "model.vocab_size: must be <= 4194304, got 1000000000000"):
        assert text in msg, text


def test_data_config_weights_and_tokens_must_be_finite():
    with pytest.raises(ConfigError) as e:
        build(DataConfig, {"sources": [{"name": "a", "tokens": float("nan"), "weight": float("nan")},
                                       {"name": "b", "tokens": float("inf")}]})
    msg = str(e.value)
    assert "sources[0].tokens: must be a finite number, got nan" in msg
    assert "sources[0].weight: must be a finite number, got nan" in msg
    assert "sources[1].tokens: must be a finite number, got inf" in msg


def test_a_field_may_allow_infinity_but_never_nan():
    @dataclass
    class Limits:
        budget: float = field(1.0, help="a limit that may be unbounded", allow_inf=True)

    assert build(Limits, {"budget": float("inf")}).budget == float("inf")
    with pytest.raises(ConfigError, match="budget: must be a finite number, got nan"):
        build(Limits, {"budget": float("nan")})


def test_deepspeed_auto_placeholders_are_refused_with_other_problems():
    msg = _problems(["deepspeed.train_micro_batch_size_per_gpu=auto", "deepspeed.zero_optimization={stage: 2, "
                     "reduce_bucket_size: auto}", "deepspeed.gradient_clipping=.nan", "optim.lr=nan"])
    assert "deepspeed.train_micro_batch_size_per_gpu: 'auto' is a Hugging Face Trainer placeholder" in msg
    assert "deepspeed.zero_optimization.reduce_bucket_size: 'auto'" in msg
    assert "deepspeed.gradient_clipping: must be a finite number, got nan" in msg
    assert "optim.lr: must be a finite number" in msg and "4 problem(s)" in msg
