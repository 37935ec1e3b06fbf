"""Metrics reach every sink: metrics.jsonl, TensorBoard event files, loss.png, and W&B in offline mode
(no network needed)."""

from __future__ import annotations

import json

import pytest
from clitools import cli_env, run_cli, tiny_train_args


def test_metrics_jsonl_tensorboard_plot_and_offline_wandb(tiny_data, tmp_path):
    pytest.importorskip("wandb")
    run_cli(tiny_train_args(tiny_data, tmp_path, "train.max_steps=3", "train.zero_stage=0", "logging.wandb=true",
                            "logging.tensorboard=true", "logging.plot=true"),
            env=cli_env(WANDB_MODE="offline", WANDB_SILENT="true"))
    run = tmp_path / "t"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "tokens_per_s_per_device", "memory_gib", "data_checksum"):
        assert all(key in r for r in train), key
    assert any(r["kind"] == "validation" and "val/shakespeare/loss" in r for r in records)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "loss.png").stat().st_size > 1000
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline and list(offline[0].glob("*.wandb"))
