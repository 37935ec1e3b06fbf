from llmtrain.data.finetune_sets import RT_LABELS, rotten_tomatoes
from llmtrain.eval.baselines import classification_baselines


def test_baselines_on_the_rotten_tomatoes_movie_split():
    splits = rotten_tomatoes()
    res = classification_baselines(splits["train"], splits["test"], text_field="text", label_field="label",
                                   label_names=RT_LABELS)
    fresh = sum(r["label"] for r in splits["test"]) / len(splits["test"])
    assert res["majority"]["accuracy"] == fresh and 0.5 < fresh < 0.65
    assert res["majority"]["n"] == len(splits["test"])
    assert 0.68 < res["tfidf_logreg"]["accuracy"] < 0.85
    assert res["tfidf_logreg"]["macro_f1"] > res["majority"]["macro_f1"] + 0.2
