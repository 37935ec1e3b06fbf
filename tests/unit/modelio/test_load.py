"""load_model: checkpoints written today and before, the head found from head.json, run-time switches."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from llmtrain.errors import CheckpointError
from llmtrain.model.heads import SequenceClassifier
from llmtrain.model.runtime import ModelRuntime
from llmtrain.modelio.layout import HEAD_FILE, LATEST, MODEL_YAML, STATE
from llmtrain.modelio.load import load_model
from llmtrain.modelio.weights import save_weights


def _checkpoint(root, model, state_dict=None, head=None):
    step = root / "run" / "step_000004"
    step.mkdir(parents=True)
    save_weights(state_dict if state_dict is not None else model.state_dict(), model.cfg, step, head=head)
    (step / STATE).write_text(json.dumps({"step": 4}))
    (root / "run" / LATEST).write_text(step.name)
    return root / "run"


def _classifier(make_model):
    torch.manual_seed(1)
    clf = SequenceClassifier(make_model(), 3, pooling="mean", pad_id=0)
    torch.nn.init.normal_(clf.score.weight)
    return clf


def test_a_classifier_is_found_from_head_json(tmp_path, make_model):
    clf = _classifier(make_model)
    run = _checkpoint(tmp_path, clf.backbone, clf.state_dict(),
                      head={"task": "classification", "labels": ["a", "b", "c"], "pooling": "mean", "pad_id": 0})
    loaded = load_model(run)
    assert loaded.classifier is not None and loaded.head["label_names"] == ["a", "b", "c"]
    tokens = torch.randint(1, 97, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded.classifier(tokens), clf.eval()(tokens), rtol=0, atol=0)


def test_head_json_without_task_still_means_a_classifier_when_score_weights_exist(tmp_path, make_model):
    clf = _classifier(make_model)
    run = _checkpoint(tmp_path, clf.backbone, clf.state_dict(), head={"labels": ["a", "b", "c"], "pooling": "mean"})
    assert load_model(run).classifier is not None


def test_a_declared_head_without_weights_is_refused(tmp_path, make_model):
    model = make_model()
    run = _checkpoint(tmp_path, model, head={"task": "classification", "labels": ["a", "b"]})
    with pytest.raises(CheckpointError, match="declares a classifier but the weights have no score"):
        load_model(run)


def test_a_checkpoint_with_legacy_runtime_keys_loads_and_takes_a_runtime(tmp_path, make_model):
    model = make_model(tie_embeddings=True)
    run = _checkpoint(tmp_path, model)
    step = run / "step_000004"
    legacy = {**yaml.safe_load((step / MODEL_YAML).read_text()), "attention_backend": "sdpa",
              "activation_checkpointing": "full", "compile": False}
    (step / MODEL_YAML).write_text(yaml.safe_dump(legacy))
    loaded = load_model(run, runtime=ModelRuntime(attention_backend="eager"))
    assert loaded.classifier is None and not (step / HEAD_FILE).exists()
    assert loaded.model.attention_backend == "eager" and loaded.model.output.weight is loaded.model.tok_embeddings.weight
    tokens = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens), model(tokens), rtol=1e-5, atol=1e-5)
