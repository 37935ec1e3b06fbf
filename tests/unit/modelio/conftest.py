"""Fixtures of the model I/O tests: tiny configs and models (see tests/modeltools.py), few threads."""

from modeltools import _few_threads, make_config, make_model  # noqa: F401  (fixtures)
