"""Reference points for a classification task, computed on the same splits as the fine-tuned model.

- majority class: predicts the most frequent training label (its accuracy is the label prior);
- TF-IDF + logistic regression (scikit-learn): word 1-2 grams, a strong bag-of-words baseline
  that a fine-tuned LM should approach or beat; multinomial, so any number of classes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from llmtrain.eval.classification import classification_metrics


def majority_baseline(train_labels: Sequence[int], test_labels: Sequence[int], num_labels: int,
                      label_names: list[str] | None = None) -> dict[str, float]:
    majority = Counter(train_labels).most_common(1)[0][0]
    return classification_metrics(test_labels, [majority] * len(test_labels), num_labels, label_names)


def tfidf_logreg_baseline(train_texts: Sequence[str], train_labels: Sequence[int], test_texts: Sequence[str],
                          test_labels: Sequence[int], num_labels: int, label_names: list[str] | None = None,
                          *, seed: int = 0) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                         # lbfgs fits one multinomial model for any number of classes (liblinear refuses >= 3)
                         LogisticRegression(C=4.0, solver="lbfgs", max_iter=2000, random_state=seed))
    pipe.fit(list(train_texts), list(train_labels))
    return classification_metrics(test_labels, pipe.predict(list(test_texts)).tolist(), num_labels, label_names)


def classification_baselines(train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]], *, text_field: str,
                             label_field: str, label_names: list[str]) -> dict[str, dict[str, float]]:
    """Both baselines from raw records (labels mapped through ``label_names`` like the model's)."""
    from llmtrain.data.classification import label_index

    ytr = [label_index(r[label_field], label_names) for r in train]
    yte = [label_index(r[label_field], label_names) for r in test]
    k = len(label_names)
    return {
        "majority": majority_baseline(ytr, yte, k, label_names),
        "tfidf_logreg": tfidf_logreg_baseline([str(r[text_field]) for r in train], ytr,
                                              [str(r[text_field]) for r in test], yte, k, label_names),
    }
