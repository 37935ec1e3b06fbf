"""`llmtrain` with the test-only fault injector installed: ``python tests/fault_entry.py train ...``.

Launchers run it as a script (``torchrun ... tests/fault_entry.py train ...``); the injector reads
``LLMTRAIN_FAULT`` on every rank (see :mod:`faultinject`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faultinject import FaultInjector, FaultPlan  # noqa: E402

from llmtrain.cli import main  # noqa: E402
from llmtrain.training.callbacks import add_callback_factory  # noqa: E402


def slow_conversion(delay_s: float) -> None:
    """``conversion_delay_s``: the universal conversion (rank 0) starts ``delay_s`` seconds late."""
    import time

    from llmtrain.engine import reshard

    convert = reshard.make_universal

    def make_universal(*args, **kwargs):
        time.sleep(delay_s)
        return convert(*args, **kwargs)

    reshard.make_universal = make_universal


if __name__ == "__main__":
    add_callback_factory(FaultInjector.for_trainer)
    import os

    plan = FaultPlan.from_env(int(os.environ.get("RANK", "0")))
    if plan.conversion_delay_s:
        slow_conversion(plan.conversion_delay_s)
    sys.exit(main())
