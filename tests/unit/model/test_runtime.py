"""Run-time switches applied from outside: defaults, checkpointing marks, classifiers, bad values."""

from __future__ import annotations

import pytest
import torch

from llmtrain.model.heads import SequenceClassifier
from llmtrain.model.runtime import ModelRuntime, apply_runtime
from llmtrain.model.transformer import Transformer


def test_a_plain_transformer_runs_with_the_defaults(make_config):
    model = Transformer(make_config(n_layers=3))
    assert model.attention_backend == "auto" and model.compile_blocks is False
    assert [block.checkpointed for block in model.layers] == [False, False, False]


@pytest.mark.parametrize("mode, marks", [("none", [False] * 3), ("full", [True] * 3),
                                         ("selective", [True, False, True])])
def test_checkpointing_marks_blocks(mode, marks, make_config):
    model = apply_runtime(Transformer(make_config(n_layers=3)), ModelRuntime(activation_checkpointing=mode))
    assert [block.checkpointed for block in model.layers] == marks


def test_a_classifiers_backbone_is_reached(make_config):
    clf = SequenceClassifier(Transformer(make_config()), 2)
    apply_runtime(clf, ModelRuntime(attention_backend="eager", compile=True))
    assert clf.backbone.attention_backend == "eager" and clf.backbone.compile_blocks is True


def test_the_backend_changes_kernels_not_results(make_model):
    tokens = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(0))
    model = make_model()
    with torch.no_grad():
        sdpa = model(tokens)
        eager = apply_runtime(model, ModelRuntime(attention_backend="eager"))(tokens)
    torch.testing.assert_close(sdpa, eager, rtol=1e-5, atol=1e-5)


def test_bad_values_and_models_without_a_transformer_are_refused(make_config):
    with pytest.raises(ValueError, match="attention_backend: 'flash2' is not one of"):
        apply_runtime(Transformer(make_config()), ModelRuntime(attention_backend="flash2"))
    with pytest.raises(ValueError, match="contains no llmtrain Transformer"):
        apply_runtime(torch.nn.Linear(2, 2), ModelRuntime())
