#!/usr/bin/env bash
# Create .venv and install llmtrain into it. Safe to run again: it only installs what is missing.
# Torch comes first: the CPU build where no torch is present and no NVIDIA GPU is visible, so that
# the dependency resolver never pulls several GB of CUDA wheels onto a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LLMTRAIN_VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] NVIDIA GPU visible: installing the default (CUDA) torch build"
    $PIP install "torch>=2.4"
  else
    echo "[setup] no GPU visible: installing the CPU build of torch"
    $PIP install "torch==2.13.0" || $PIP install "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
stamp="$VENV/.llmtrain-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing llmtrain and its dependencies"
  $PIP install -e ".[dev,eval,mpi]" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import llmtrain, deepspeed, transformers, sentencepiece" \
    || { echo "[setup] install failed" >&2; exit 1; }
  touch "$stamp"
fi
echo "[setup] ready: $VENV/bin/llmtrain"
