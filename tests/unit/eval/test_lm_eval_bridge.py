import json
from pathlib import Path

import yaml

from llmtrain.eval.lm_eval_bridge import available_tasks, run_lm_eval, stage_tasks


def test_shipped_tasks_stage_with_absolute_data_paths(tmp_path):
    assert {"sentiment_rt", "bigbench_human_organs_senses"} <= set(available_tasks())
    names = stage_tasks(["sentiment_rt", "bigbench_human_organs_senses"], tmp_path)
    assert names == ["llmtrain_sentiment_rt", "llmtrain_bigbench_human_organs_senses"]
    spec = yaml.safe_load((tmp_path / "sentiment_rt.yaml").read_text())
    data = spec["dataset_kwargs"]["data_files"]["test"]
    rows = [json.loads(line) for line in Path(data).read_text().splitlines()]
    assert len(rows) > 800 and {r["gold"] for r in rows} == {0, 1}
    bb = yaml.safe_load((tmp_path / "bigbench_human_organs_senses.yaml").read_text())
    bb_rows = [json.loads(line) for line in Path(bb["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()]
    assert len(bb_rows) == 42 and bb_rows[0] == {"input": "Q: Which organ is for seeing?\nA:",
                                                 "choices": ["eye", "lip", "mouth", "ear"], "gold": 0}


def test_lm_eval_runs_offline_on_an_export(tiny_model, sp_tokenizer_dir, tmp_path):
    from llmtrain.data.tokenizer import load_tokenizer
    from llmtrain.modelio.hf import export_hf

    model = tiny_model(vocab_size=load_tokenizer(sp_tokenizer_dir).vocab_size)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("rope.")}
    export_hf(sd, model.cfg, tmp_path / "hf", tokenizer_dir=sp_tokenizer_dir)
    res = run_lm_eval(tmp_path / "hf", ["sentiment_rt", "bigbench_human_organs_senses"], limit=6, batch_size=4)
    assert set(res) == {"llmtrain_sentiment_rt", "llmtrain_bigbench_human_organs_senses"}
    for metrics in res.values():
        assert 0.0 <= metrics["acc"] <= 1.0 and 0.0 <= metrics["acc_norm"] <= 1.0
