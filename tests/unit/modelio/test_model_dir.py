"""`llmtrain import-hf` writes an llmtrain model directory that loads back into the same model."""

from __future__ import annotations

import argparse

import torch

from llmtrain.commands import import_hf as command
from llmtrain.model.transformer import Transformer
from llmtrain.modelio.hf import export_hf
from llmtrain.modelio.model_dir import load_model_dir


def test_import_hf_command_round_trip(tmp_path, make_model, capsys):
    model = make_model(tie_embeddings=True)
    hf_dir = tmp_path / "hf"
    export_hf(model.state_dict(), model.cfg, hf_dir)
    (hf_dir / "tokenizer_config.json").write_text("{}")
    assert command.run(argparse.Namespace(hf_dir=str(hf_dir), out=str(tmp_path / "ours"), dtype="keep", overwrite=False)) == 0
    assert "2 layers, dim 64, 4 heads (2 kv), vocab 97" in capsys.readouterr().out
    assert (tmp_path / "ours" / "tokenizer" / "tokenizer_config.json").is_file()

    cfg, sd = load_model_dir(tmp_path / "ours")
    assert cfg.tie_embeddings and cfg.hidden_dim == model.cfg.hidden_dim
    loaded = Transformer(cfg).eval()
    loaded.load_state_dict(sd)
    assert loaded.output.weight is loaded.tok_embeddings.weight
    tokens = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))
