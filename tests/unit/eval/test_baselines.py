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


def test_baselines_handle_three_classes():
    import random

    rng = random.Random(0)
    words = {"sport": ["goal", "match", "team", "score"], "food": ["bread", "soup", "salt", "cook"],
             "tech": ["code", "chip", "cloud", "data"]}
    common = ["the", "a", "of", "today", "really"]

    def rows(n):
        out = []
        for i in range(n):
            label = list(words)[i % 3]
            text = " ".join(rng.choice(words[label] if rng.random() < 0.5 else common) for _ in range(8))
            out.append({"text": text, "topic": label})
        return out

    train, test = rows(150), rows(60)
    res = classification_baselines(train, test, text_field="text", label_field="topic",
                                   label_names=["sport", "food", "tech"])
    assert res["majority"]["n"] == 60 and abs(res["majority"]["accuracy"] - 1 / 3) < 1e-9
    assert res["tfidf_logreg"]["accuracy"] > 0.9 and res["tfidf_logreg"]["macro_f1"] > 0.9
