"""The quickstart report: the pretrained and from-scratch fine-tunes beside the baselines on one split."""

import pytest

from llmtrain.errors import UserError
from llmtrain.eval.report import write_report
from llmtrain.report import write_quickstart_report

MAJORITY = {"accuracy": 0.5756, "macro_f1": 0.3653, "n": 933}
TFIDF = {"accuracy": 0.746, "macro_f1": 0.7373, "n": 933}


def _eval(work, name, accuracy, majority=MAJORITY):
    results = {"classification": {"fine-tuned": {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "n": 933},
                                  "majority": majority, "tfidf_logreg": TFIDF},
               "classification_task": "rotten_tomatoes (test split)"}
    write_report(results, work / name, plots=False)


def test_report_ranks_both_fine_tunes_and_baselines(tmp_path):
    _eval(tmp_path, "eval_sentiment", 0.7610)
    _eval(tmp_path, "eval_sentiment_scratch", 0.6810)
    timings, cpu = {"prepare": 20.0, "pretrain": 300.5, "finetune": 70.0}, {"prepare": 9.0, "pretrain": 590.0}
    text = write_quickstart_report(tmp_path, tmp_path / "pre", tmp_path / "ft", timings, cpu).read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "`" in ln]
    assert [r.split("`")[1] for r in rows] == ["fine-tuned", "from-scratch", "tfidf_logreg", "majority"]
    assert "| 0.7610 |" in rows[0] and "| 0.6810 |" in rows[1] and "| 0.7460 |" in rows[2]
    assert "Pretraining adds 8.0 accuracy points" in text and "1.5 points ahead of TF-IDF" in text
    assert "| pretrain | 300.5 | 590.0 |" in text and "| finetune | 70.0 | |" in text
    assert "| **total** | **390.5** (6.5 min) | 599.0 |" in text
    assert text.index("what pretraining buys") < text.index("Stage timings")


def test_report_refuses_scores_from_different_splits(tmp_path):
    _eval(tmp_path, "eval_sentiment", 0.70)
    _eval(tmp_path, "eval_sentiment_scratch", 0.68, majority={**MAJORITY, "accuracy": 0.61})
    with pytest.raises(UserError, match="not scored on the same split"):
        write_quickstart_report(tmp_path, tmp_path / "pre", tmp_path / "ft", {})


def test_report_says_when_the_fine_tune_trails(tmp_path):
    _eval(tmp_path, "eval_sentiment", 0.7128)
    _eval(tmp_path, "eval_sentiment_scratch", 0.7200)
    text = write_quickstart_report(tmp_path, tmp_path / "pre", tmp_path / "ft", {"pretrain": 1.0}).read_text()
    assert "Pretraining costs 0.7 accuracy points" in text and "3.3 points behind TF-IDF" in text
