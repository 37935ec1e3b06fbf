import json

from llmtrain.eval.report import write_report


def test_report_writes_json_markdown_and_plots(tmp_path):
    results = {
        "model": "ckpt/step_000010",
        "perplexity": {"shakespeare": {"loss": 2.0, "ppl": 7.389, "tokens": 4096}},
        "classification": {"fine-tuned": {"accuracy": 0.81, "macro_f1": 0.8, "n": 1300},
                           "majority": {"accuracy": 0.58, "macro_f1": 0.37, "n": 1300}},
        "lm_eval": {"llmtrain_sentiment_rt": {"acc": 0.6, "acc_norm": 0.55}},
        "samples": [{"prompt": "Hi", "completion": "there"}],
    }
    paths = write_report(results, tmp_path)
    assert json.loads(paths["json"].read_text())["classification"]["majority"]["accuracy"] == 0.58
    md = paths["markdown"].read_text()
    assert "| fine-tuned | 0.8100 | 0.8000 | 1300 |" in md
    assert "| majority | 0.5800 | 0.3700 | 1300 |" in md
    assert "| shakespeare | 2.0000 | 7.3890 | 4096 |" in md
    assert "| llmtrain_sentiment_rt | 0.6000 | 0.5500 |" in md
    assert paths["classification_png"].stat().st_size > 1000 and paths["perplexity_png"].is_file()
