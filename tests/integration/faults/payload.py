"""A pickled payload planted in real checkpoint files: unpickling it with full pickle runs ``touch MARKER``."""

from __future__ import annotations

import os
from pathlib import Path

import torch


class Payload:
    """What a tampered checkpoint file could carry: ``__reduce__`` makes the unpickler call ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path) -> None:
    """Add the payload to what ``path`` holds (a file this test wrote, hence read with full pickle): a key of
    a dict, or an attribute of a tensor (torch pickles a tensor's ``__dict__`` with it)."""
    data = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(data, dict):
        data["planted"] = Payload(marker)
    else:
        assert isinstance(data, torch.Tensor), (path, type(data))
        data.planted = Payload(marker)
    torch.save(data, path)
