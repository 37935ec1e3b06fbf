"""One safetensors reader/writer: tied embeddings stored once, no DeepSpeed fallback, damage named."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmtrain.errors import CheckpointError
from llmtrain.model.transformer import Transformer
from llmtrain.modelio.layout import WEIGHTS
from llmtrain.modelio.weights import load_weights, save_weights


def test_tied_output_is_stored_once_and_shared_on_load(tmp_path, make_model):
    model = make_model(tie_embeddings=True)
    save_weights(model.state_dict(), model.cfg, tmp_path)
    assert "output.weight" not in load_file(str(tmp_path / WEIGHTS))
    sd = load_weights(tmp_path, model.cfg)
    assert sd["output.weight"] is sd["tok_embeddings.weight"]
    back = Transformer(model.cfg)
    back.load_state_dict(sd)
    assert back.output.weight is back.tok_embeddings.weight


def test_a_classifiers_prefixed_tied_output_too(tmp_path, make_model):
    model = make_model(tie_embeddings=True)
    sd = {f"backbone.{k}": v for k, v in model.state_dict().items()} | {"score.weight": torch.zeros(2, 64)}
    save_weights(sd, model.cfg, tmp_path, head={"task": "classification"})
    assert "backbone.output.weight" not in load_file(str(tmp_path / WEIGHTS))
    loaded = load_weights(tmp_path, model.cfg)
    assert loaded["backbone.output.weight"] is loaded["backbone.tok_embeddings.weight"]


def test_checkpoints_that_stored_a_tied_copy_still_load(tmp_path, make_model):
    model = make_model(tie_embeddings=True)
    save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, str(tmp_path / WEIGHTS))
    sd = load_weights(tmp_path, model.cfg)
    assert torch.equal(sd["output.weight"], model.output.weight)


def test_no_fallback_to_deepspeed_states(tmp_path, make_config):
    (tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"never read")
    with pytest.raises(CheckpointError, match="model.safetensors is missing.*--from-deepspeed-states"):
        load_weights(tmp_path, make_config())
    (tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(CheckpointError, match="neither consolidated weights nor DeepSpeed states"):
        load_weights(tmp_path, make_config())


def test_a_damaged_file_is_named(tmp_path, make_config):
    (tmp_path / WEIGHTS).write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="model.safetensors is truncated or damaged"):
        load_weights(tmp_path, make_config())
