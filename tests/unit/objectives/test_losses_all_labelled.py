"""Pretraining labels every position: the loss skips the gather of labelled positions, bit for bit."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmtrain.objectives import losses
from llmtrain.objectives.losses import IGNORE_INDEX, chunked_cross_entropy_sum


@pytest.mark.parametrize("materialize", [True, False])
def test_all_labelled_equals_the_gathered_loss_and_gradients(materialize, monkeypatch):
    if not materialize:
        monkeypatch.setattr(losses, "MATERIALIZE_LOGITS_BYTES", 0)  # the checkpointed chunks
    torch.manual_seed(0)
    hidden = torch.randn(40, 16, requires_grad=True)
    output = nn.Linear(16, 30, bias=False)
    labels = torch.randint(0, 30, (40,))
    got = chunked_cross_entropy_sum(hidden, output, labels, chunk_tokens=16)
    got.backward()
    got_grads = hidden.grad.clone(), output.weight.grad.clone()
    hidden.grad = output.weight.grad = None
    keep = labels.ne(IGNORE_INDEX)  # what the loss did before: gather every (labelled) position
    h, y = hidden[keep], labels[keep]
    if materialize:
        want = F.cross_entropy(F.linear(h, output.weight).float(), y, reduction="sum")
    else:
        want = sum(F.cross_entropy(F.linear(h[s:s + 16], output.weight).float(), y[s:s + 16], reduction="sum")
                   for s in range(0, 40, 16))
    want.backward()
    assert torch.equal(got, torch.zeros((), dtype=torch.float32) + want)
    assert torch.equal(got_grads[0], hidden.grad) and torch.equal(got_grads[1], output.weight.grad)


def test_a_partly_labelled_batch_still_counts_only_its_labels():
    torch.manual_seed(0)
    hidden = torch.randn(10, 8)
    output = nn.Linear(8, 12, bias=False)
    labels = torch.randint(0, 12, (10,))
    labels[:4] = IGNORE_INDEX
    got = chunked_cross_entropy_sum(hidden, output, labels)
    want = F.cross_entropy(F.linear(hidden[4:], output.weight), labels[4:], reduction="sum")
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
