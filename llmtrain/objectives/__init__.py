"""What is trained: pretraining, SFT and classification, each one :class:`~llmtrain.objectives.base.Objective`.

``get(name)`` returns the objective registered under ``name`` (``pretrain``, or ``finetune.task``).
Every module of the package is imported on first lookup (see :func:`llmtrain.objectives.base.get`),
so that importing :mod:`llmtrain.objectives.losses` stays light and free of import cycles with eval.
"""

from llmtrain.objectives.base import Objective, get, names, register

__all__ = ["Objective", "get", "names", "register"]
