"""What is trained: pretraining, SFT and classification, each one :class:`~llmtrain.objectives.base.Objective`.

``get(name)`` returns the objective registered under ``name`` (``pretrain``, or ``finetune.task``).
The built-in modules are imported on first use (see ``BUILTIN`` in :mod:`llmtrain.objectives.base`),
so that importing :mod:`llmtrain.objectives.losses` stays light and free of import cycles with eval.
"""

from llmtrain.objectives.base import Objective, get, names, register

__all__ = ["Objective", "get", "names", "register"]
