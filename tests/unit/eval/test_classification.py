import pytest
import torch
from sklearn.metrics import f1_score

from llmtrain.data.finetune_loader import FinetuneBatchIterator, eval_batches
from llmtrain.eval.baselines import majority_baseline
from llmtrain.eval.classification import classification_metrics, evaluate_classifier
from llmtrain.model.config import ModelConfig
from llmtrain.model.heads import SequenceClassifier
from llmtrain.model.transformer import Transformer
from llmtrain.objectives.classification import Classification
from llmtrain.objectives.losses import classification_loss


def test_metrics_match_sklearn():
    y_true = [0, 0, 1, 1, 2, 2, 2, 0]
    y_pred = [0, 1, 1, 1, 2, 0, 2, 0]
    m = classification_metrics(y_true, y_pred, 3, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["f1/b"] == pytest.approx(0.8)


def test_majority_baseline_is_the_label_prior():
    m = majority_baseline([1, 1, 0], [1, 0, 0, 0], 2)
    assert m["accuracy"] == 0.25 and m["macro_f1"] == pytest.approx((0 + 0.4) / 2)


def _dataset(n: int, seed: int):
    """Label 1 iff token 7 occurs: a clear signal; 70% of rows are label 0."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        ids = (torch.randint(10, 40, (8,), generator=g)).tolist()
        label = int(i % 10 < 3)
        if label:
            ids[int(torch.randint(0, 8, (1,), generator=g))] = 7
        rows.append({"input_ids": [1] + ids + [2], "labels": [-100] * 10, "class_label": label})
    return rows


def test_fine_tuning_a_classifier_beats_the_majority_baseline():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = ModelConfig(vocab_size=48, dim=32, n_layers=1, n_heads=4, multiple_of=16, max_seq_len=16)  # auto = sdpa on CPU
    clf = SequenceClassifier(Transformer(cfg), 2, pooling="mean", pad_id=0)
    train, test = _dataset(200, 0), _dataset(100, 1)
    collate = Classification().collate
    loader = FinetuneBatchIterator(train, seq_len=16, micro_batch_size=16, global_batch_size=16, dp_rank=0,
                                   dp_size=1, seed=0, pad_id=0, collate_fn=collate)
    opt = torch.optim.AdamW(clf.parameters(), lr=3e-3)
    for _ in range(80):
        loss, _ = classification_loss(clf, loader.next_batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
    m = evaluate_classifier(clf, eval_batches(test, micro_batch_size=32, pad_id=0, collate_fn=collate), torch.device("cpu"), 2)
    majority = majority_baseline([r["class_label"] for r in train], [r["class_label"] for r in test], 2)
    assert majority["accuracy"] == pytest.approx(0.7)
    assert m["accuracy"] >= 0.9 > majority["accuracy"]
    assert m["macro_f1"] > majority["macro_f1"] + 0.3
