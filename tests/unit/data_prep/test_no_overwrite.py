"""Commands that write named outputs refuse existing ones unless --overwrite (named in the error);
a refused mixture plan writes nothing; tokenizer training is deterministic beyond sample_sentences."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from corpus_fixtures import synthetic_docs

from data_prep.tokenizer import reservoir_sample, train_tokenizer
from llmtrain.cli import main


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tokenizer_training_is_deterministic_with_more_lines_than_the_sample(tmp_path):
    docs = synthetic_docs(400, seed=11, min_words=5, max_words=12)  # 400 lines, 150 sampled
    fps = {train_tokenizer(docs, tmp_path / f"t{i}", vocab_size=320, sample_sentences=150, seed=3, threads=2).fingerprint
           for i in range(3)}
    assert len(fps) == 1
    meta = json.loads((tmp_path / "t0/llmtrain_tokenizer.json").read_text())
    assert meta["trained_on_lines"] == 150 and meta["lines_read"] == 400
    other = train_tokenizer(docs, tmp_path / "s", vocab_size=320, sample_sentences=150, seed=4, threads=2)
    assert other.fingerprint not in fps  # another seed samples other lines


def test_reservoir_sample_is_seeded_uniform_and_in_input_order():
    lines = [f"l{i}" for i in range(1000)]
    a, n = reservoir_sample(iter(lines), 100, seed=1)
    assert n == 1000 and len(a) == 100 and a == sorted(a, key=lambda s: int(s[1:]))
    assert reservoir_sample(iter(lines), 100, seed=1)[0] == a != reservoir_sample(iter(lines), 100, seed=2)[0]
    assert max(int(s[1:]) for s in a) > 500  # not just the first lines
    assert reservoir_sample(iter(lines[:50]), 100, seed=1) == (lines[:50], 50)


def test_tokenizer_train_refuses_an_existing_tokenizer(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("".join(synthetic_docs(200, seed=4)))
    args = ["tokenizer", "train", "--input", str(tmp_path / "a.txt"), "--vocab-size", "300", "--out", str(tmp_path / "tok"),
            "--sample-sentences", "2000"]
    assert main(args) == 0
    (tmp_path / "tok/notes.md").write_text("mine")
    before = {p.name: sha(p) for p in (tmp_path / "tok").iterdir()}
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"llmtrain tokenizer: error: --out {tmp_path / 'tok'} already holds a tokenizer (tokenizer.model, " in err
    assert "pass --overwrite to replace those files" in err
    assert {p.name: sha(p) for p in (tmp_path / "tok").iterdir()} == before
    assert main([*args[:-2], "--sample-sentences", "1000", "--overwrite"]) == 0
    assert (tmp_path / "tok/notes.md").read_text() == "mine"
    # inputs are never written: an --out overlapping an input is refused
    (tmp_path / "in").mkdir()
    (tmp_path / "in/b.txt").write_text("".join(synthetic_docs(50, seed=5)))
    assert main(["tokenizer", "train", "--input", str(tmp_path / "in"), "--vocab-size", "300", "--out",
                 str(tmp_path / "in/tok")]) == 2
    assert f"--out {tmp_path / 'in/tok'} overlaps the input {tmp_path / 'in'}" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["b.txt"]
    assert main([*args[:4], "--vocab-size", "1000000000000", *args[6:], "--overwrite"]) == 2
    assert "--vocab-size 1000000000000 is far above any useful vocabulary" in capsys.readouterr().err


def test_import_hf_refuses_an_existing_model_and_its_own_input(tmp_path, capsys):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf = tmp_path / "hf"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).save_pretrained(hf)
    hf_before = {p.name: sha(p) for p in hf.iterdir()}
    out = tmp_path / "model"
    assert main(["import-hf", "--hf-dir", str(hf), "--out", str(out)]) == 0
    before = sha(out / "model.safetensors")
    capsys.readouterr()
    assert main(["import-hf", "--hf-dir", str(hf), "--out", str(out), "--dtype", "bf16"]) == 2
    err = capsys.readouterr().err
    assert f"llmtrain import-hf: error: --out {out} already holds a model (model.safetensors, model.yaml" in err
    assert "pass --overwrite to replace it" in err and sha(out / "model.safetensors") == before
    assert main(["import-hf", "--hf-dir", str(hf), "--out", str(out), "--dtype", "bf16", "--overwrite"]) == 0
    assert sha(out / "model.safetensors") != before
    assert main(["import-hf", "--hf-dir", str(hf), "--out", str(hf)]) == 2
    assert f"--out {hf} overlaps --hf-dir {hf}" in capsys.readouterr().err
    assert {p.name: sha(p) for p in hf.iterdir()} == hf_before


def test_mixture_refuses_existing_plans_and_a_refused_plan_writes_nothing(tmp_path, capsys):
    args = ["mixture", "--config", "configs/data/gpt3_table22.yaml", "--tokens", "300e9", "--out", str(tmp_path)]
    assert main(args) == 0
    before = {p.name: sha(p) for p in tmp_path.iterdir()}
    capsys.readouterr()
    assert main([*args[:4], "1e9"] + args[5:]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'mixture.json'} and {tmp_path / 'mixture.png'} already exist" in err
    assert "pass --overwrite to replace them" in err
    assert main([*args, "--set", "max_epochs=3", "--overwrite"]) == 2  # over the cap: refused before writing
    assert "epochs > max_epochs 3.0" in capsys.readouterr().err
    assert {p.name: sha(p) for p in tmp_path.iterdir()} == before
    assert main([*args[:4], "1e9"] + args[5:] + ["--overwrite"]) == 0
    assert json.loads((tmp_path / "mixture.json").read_text())["budget"] == 1e9


@pytest.mark.parametrize("tokens", ["nan", "inf", "-5", "0", "lots"])
def test_mixture_token_budget_must_be_a_finite_positive_number(tokens, capsys):
    with pytest.raises(SystemExit) as e:
        main(["mixture", "--config", "configs/data/gpt3_table22.yaml", "--tokens", tokens])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "llmtrain mixture: error: argument --tokens:" in err and repr(tokens) in err
