"""The one interface every training objective implements, and the registry that finds them by name.

An objective is everything that differs between "what is learned": how records become examples,
how examples become a batch, the model (or head) to train, the loss, the held-out metrics during
training and in ``llmtrain eval``, and the files a checkpoint carries for it. The loop, the
commands and the evaluation report only talk to this interface, so adding an objective (DPO,
multi-turn chat) is adding one module to this package that subclasses :class:`Objective` and
decorates it with :func:`register`: every module of the package is imported on the first lookup
(not at package import: the objectives import evaluation code, which imports the losses here).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import nn

from llmtrain.data.finetune_loader import collate as pad_collate
from llmtrain.data.finetune_sets import Records
from llmtrain.data.sft import TextTokenizer
from llmtrain.errors import UserError
from llmtrain.training.task import Batch, TrainingTask

if TYPE_CHECKING:
    from llmtrain.config.roots import EvalRunConfig, RunConfig
    from llmtrain.config.schema import FinetuneConfig
    from llmtrain.distributed.env import DistEnv
    from llmtrain.modelio.load import LoadedModel

Example = dict[str, Any]  # one encoded sample: ``input_ids``, ``labels`` and the objective's own keys
Evaluator = Callable[[nn.Module], dict[str, float]]


@dataclass
class EncodedData:
    """An objective's tokenized ``train``/``validation``/``test`` splits and the records they came from.

    Objectives subclass it to carry what must travel with the examples (label names, chat template).
    """

    splits: dict[str, list[Example]]
    records: Records

    def summary(self) -> str:
        return "examples: " + ", ".join(f"{s} {len(v)}" for s, v in self.splits.items())


class Objective(ABC):
    """What is trained and how it is judged; one subclass per objective, found by :attr:`name`."""

    name: ClassVar[str]

    @abstractmethod
    def build_task(self, cfg: RunConfig, env: DistEnv, device: torch.device) -> TrainingTask:
        """Everything the loop needs: model, loss, batches, evaluator, exported files and head."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean loss, number of items it averages over)`` of ``model`` on one micro batch."""

    def encode(self, records: Records, ft: FinetuneConfig, tokenizer: TextTokenizer, *,
               seq_len: int) -> EncodedData:
        """Tokenize raw records (from :func:`llmtrain.data.finetune_sets.load_records`) into examples."""
        raise NotImplementedError(f"the {self.name} objective does not train on records")

    def collate(self, samples: Sequence[Example], pad_id: int, pad_to: int | None = None) -> Batch:
        """One padded batch of examples; objectives with extra keys (class labels) add them here."""
        return pad_collate(samples, pad_id, pad_to=pad_to)

    def evaluator(self, data: EncodedData, *, micro_batch_size: int, pad_id: int, device: torch.device,
                  dp_rank: int = 0, dp_size: int = 1, split: str = "validation") -> Evaluator | None:
        """The in-training ``evaluate(model_or_engine) -> {"val/...": value}``; None = nothing to evaluate."""
        return None

    def evaluate(self, loaded: LoadedModel, cfg: EvalRunConfig, *, device: torch.device) -> dict[str, Any]:
        """This objective's section(s) of the ``llmtrain eval`` report on a loaded model ({} = none)."""
        return {}

    def export_files(self, data: EncodedData) -> dict[str, str]:
        """Files (name -> text) written into every checkpoint beside the weights, e.g. the chat template."""
        return {}


# The objectives that ship with llmtrain, imported by get()/names() on first use (not at package
# import: they import eval, whose perplexity imports objectives.losses). A new one is one more line.
# modules of this package that hold shared code rather than an objective
SUPPORT_MODULES = ("base", "losses", "finetune_common", "finetune_schedule")
_REGISTRY: dict[str, type[Objective]] = {}
ObjectiveClass = TypeVar("ObjectiveClass", bound=type[Objective])


def register(cls: ObjectiveClass) -> ObjectiveClass:
    """Class decorator: make ``cls`` findable as ``get(cls.name)``."""
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__qualname__} has no `name`; set `name = \"...\"` on the class")
    known = _REGISTRY.get(name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"objective {name!r} is already registered by {known.__module__}.{known.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def get(name: str) -> Objective:
    """A fresh instance of the objective called ``name``."""
    _import_builtins()
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise UserError(f"unknown objective {name!r}; known objectives: {', '.join(names())}") from None


def names() -> list[str]:
    """The registered objective names, sorted."""
    _import_builtins()
    return sorted(_REGISTRY)


def _import_builtins() -> None:
    import pkgutil
    from pathlib import Path

    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in SUPPORT_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")  # each registers its objective class
