import math

import pytest
import torch
import torch.nn.functional as F

from llmtrain.model.config import ModelConfig
from llmtrain.model.heads import SequenceClassifier
from llmtrain.model.runtime import ModelRuntime, apply_runtime
from llmtrain.model.transformer import Transformer
from llmtrain.objectives import losses
from llmtrain.objectives.losses import (
    IGNORE_INDEX,
    causal_lm_loss,
    chunked_cross_entropy_sum,
    classification_loss,
)

CFG = ModelConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, multiple_of=16, max_seq_len=32)
EAGER = ModelRuntime(attention_backend="eager")


def _model() -> Transformer:
    torch.manual_seed(0)
    return apply_runtime(Transformer(CFG), EAGER)


@pytest.mark.parametrize("materialize", [True, False], ids=["whole-logits", "checkpointed-chunks"])
def test_chunked_ce_equals_full_cross_entropy_and_gradients(materialize, monkeypatch):
    # small logits are built whole (no recompute); larger ones go chunk by chunk, checkpointed
    monkeypatch.setattr(losses, "MATERIALIZE_LOGITS_BYTES", 2**40 if materialize else 0)
    torch.manual_seed(0)
    out = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(37, 16, requires_grad=True)
    labels = torch.randint(0, 50, (37,))
    labels[::4] = IGNORE_INDEX
    got = chunked_cross_entropy_sum(hidden, out, labels, chunk_tokens=5)
    got.backward()
    g_hidden, g_w = hidden.grad.clone(), out.weight.grad.clone()
    hidden.grad = None
    out.weight.grad = None
    ref = F.cross_entropy(out(hidden), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    ref.backward()
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(g_hidden, hidden.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_w, out.weight.grad, rtol=1e-5, atol=1e-6)


def test_sft_loss_is_the_mean_over_response_tokens_only():
    model = _model()
    # prompt = 3 tokens, response = 2 tokens + EOS(=2); pre-shifted labels, prompt and padding -100
    ids = [1, 10, 11, 12, 20, 21, 2]
    input_ids = torch.tensor([ids[:-1] + [0, 0]])
    labels = torch.tensor([[-100, -100, -100, 20, 21, 2, -100, -100]])
    loss, n = causal_lm_loss(model, {"input_ids": input_ids, "labels": labels}, chunk_tokens=2)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids).double(), -1)[0]
    hand = -(logp[3, 20] + logp[4, 21] + logp[5, 2]) / 3
    assert n.item() == 3
    assert math.isclose(loss.item(), hand.item(), rel_tol=1e-5)


def test_no_labelled_tokens_gives_zero_with_a_graph():
    model = _model()
    batch = {"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.full((1, 3), IGNORE_INDEX)}
    loss, n = causal_lm_loss(model, batch)
    loss.backward()
    assert loss.item() == 0.0 and n.item() == 0


def test_classification_loss_matches_cross_entropy():
    torch.manual_seed(0)
    clf = SequenceClassifier(apply_runtime(Transformer(CFG), EAGER), 2, pad_id=0)
    batch = {"input_ids": torch.tensor([[4, 5, 6, 0], [7, 8, 9, 10]]),
             "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]),
             "class_labels": torch.tensor([1, 0])}
    loss, n = classification_loss(clf, batch)
    ref = F.cross_entropy(clf(batch["input_ids"], attention_mask=batch["attention_mask"]), batch["class_labels"])
    assert n.item() == 2
    torch.testing.assert_close(loss, ref)
