"""`llmtrain` with the test-only fault injector installed: ``python tests/fault_entry.py train ...``.

Launchers run it as a script (``torchrun ... tests/fault_entry.py train ...``); the injector reads
``LLMTRAIN_FAULT`` on every rank (see :mod:`faultinject`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faultinject import FaultInjector  # noqa: E402

from llmtrain.cli import main  # noqa: E402
from llmtrain.training.callbacks import add_callback_factory  # noqa: E402

if __name__ == "__main__":
    add_callback_factory(FaultInjector.for_trainer)
    sys.exit(main())
