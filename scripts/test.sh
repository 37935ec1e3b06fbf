#!/usr/bin/env bash
# Set up .venv (if needed) and run the whole test suite. CI runs exactly this (.ci/run).
# Tests that need Slurm, OpenMPI or network namespaces install/start what they need themselves and
# skip with the reason where that is impossible; `gpu` tests run only where CUDA is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
exec "${LLMTRAIN_VENV:-.venv}/bin/python" -m pytest -q "$@"
