"""The registry seam: an objective defined anywhere is found by name; unknown names list the known ones."""

import pytest
import torch

from llmtrain import objectives
from llmtrain.errors import UserError
from llmtrain.objectives import base


@pytest.fixture
def registry(monkeypatch):
    """The built-ins plus whatever a test registers, restored afterwards."""
    objectives.names()  # import the built-ins into the real registry first
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def test_a_new_objective_is_one_registered_class(registry):
    @objectives.register
    class Echo(objectives.Objective):
        name = "echo"

        def build_task(self, cfg, env, device):
            raise NotImplementedError

        def loss(self, model, batch):
            return batch["input_ids"].float().mean(), torch.tensor(batch["input_ids"].numel())

    got = objectives.get("echo")
    assert isinstance(got, Echo) and objectives.names() == ["classification", "echo", "pretrain", "sft"]
    batch = got.collate([{"input_ids": [1, 2], "labels": [2, 3]}, {"input_ids": [4], "labels": [5]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 0, 0, 0, 0, 0, 0], [4, 0, 0, 0, 0, 0, 0, 0]]
    assert got.loss(None, batch)[1] == 16 and got.export_files(None) == {}
    assert got.evaluator(None, micro_batch_size=1, pad_id=0, device=torch.device("cpu")) is None


def test_unknown_name_lists_the_known_ones(registry):
    with pytest.raises(UserError, match=r"unknown objective 'dpo'; known objectives: classification, pretrain, sft"):
        objectives.get("dpo")


def test_register_refuses_a_class_without_name_or_a_taken_name(registry):
    class Nameless(objectives.Objective):
        def build_task(self, cfg, env, device): ...
        def loss(self, model, batch): ...

    with pytest.raises(TypeError, match="has no `name`"):
        objectives.register(Nameless)
    Nameless.name = "sft"
    with pytest.raises(ValueError, match="already registered by llmtrain.objectives.sft.Sft"):
        objectives.register(Nameless)
