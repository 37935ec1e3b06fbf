#!/usr/bin/env bash
# Set up .venv (if needed) and run the whole pipeline on real text on this machine's CPUs:
# data -> tokenizer -> shards -> mixture plan -> 2-process ZeRO-2 pretraining -> evaluation ->
# sentiment fine-tuning -> Hugging Face export -> report. Re-running skips finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${LLMTRAIN_VENV:-.venv}/bin/llmtrain" quickstart "$@"
