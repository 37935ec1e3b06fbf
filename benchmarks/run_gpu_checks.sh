#!/usr/bin/env bash
# All GPU checks of issue 9 in one run on a lent H100/H200 (no registry there): install the carried
# wheels, run the gpu-marked tests, then bench_gpu.py for 1b and 125m (ours vs the Hugging Face
# Trainer + DeepSpeed). Everything lands in $OUT (default ./gpu_out), at most 8 files:
#   run_gpu_checks.log  this script's whole output      env.txt            GPU, driver, versions
#   pytest_gpu.log      the gpu tests                   bench_gpu_{1b,125m,1b_docs}.json figures
#   profile_1b.txt      torch.profiler table (ours, 1b) bench_logs.tar.gz  every benchmark process's log
# Needs: wheels/ carried beside the repo (see docs/performance.md), ~6-7 minutes on one H100.
#   device run: command "bash benchmarks/run_gpu_checks.sh", carry ["wheels"], timeout_s 600
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PY="${PYTHON:-python3}"
BUDGET="${BUDGET_S:-540}"   # seconds; optional steps are skipped once this much has passed
SITE="${SITE:-/tmp/site}"    # where the wheels go (the image's own site-packages stay untouched)
# BENCH_EXTRA=--cpu-smoke PYTHON=.venv/bin/python INSTALL_PROJECT=0 runs the whole script on a CPU
read -r -a EXTRA <<< "${BENCH_EXTRA:-}"
exec > >(tee "$OUT/run_gpu_checks.log") 2>&1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
step() { echo; echo "=== [$(date +%T), ${SECONDS}s] $*"; }

step "environment"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; "$PY" -V
  "$PY" -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"; } | tee "$OUT/env.txt"

step "install carried wheels into $SITE (deepspeed and the deps the image lacks)"
if [ -d wheels ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --find-links wheels --target "$SITE" \
      deepspeed hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions || exit 1
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${INSTALL_PROJECT:-1}" = 1 ]; then
  "$PY" -m pip install -q --no-deps --no-index --no-build-isolation -e . >/dev/null 2>&1 \
    || echo "(editable install failed; PYTHONPATH points at the checkout, which is enough)"
fi
"$PY" -c "import deepspeed, llmtrain; print('deepspeed', deepspeed.__version__)" 2>&1 | grep -v WARNING | tee -a "$OUT/env.txt"

bench() {  # bench <label> <preset> <variants> [extra flags]: figures to $OUT/bench_gpu_<label>.json
  local label=$1 preset=$2 variants=$3; shift 3
  step "bench_gpu.py --presets $preset --variants $variants $*"
  timeout 420 "$PY" benchmarks/bench_gpu.py --presets "$preset" --variants "$variants" --out "$WORK/$label" \
      --timeout 240 "$@" "${EXTRA[@]}"
  cp "$WORK/$label/bench_gpu.json" "$OUT/bench_gpu_$label.json" 2>/dev/null
  cp "$WORK/$label"/profile_*.txt "$OUT/" 2>/dev/null
  tar czf "$OUT/bench_logs.tar.gz" -C "$WORK" . 2>/dev/null
}

# The figures first (the lease may end), the 1b target preset before 125m.
bench 1b 1b ours,hf --warmup 5 --steps 10 --profile
bench 125m 125m ours,hf --warmup 5 --steps 10

step "gpu-marked tests"
timeout 300 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/unit/model/test_gpu_paths.py \
    tests/parity/test_attention_gpu.py 2>&1 | tee "$OUT/pytest_gpu.log"

if [ "$SECONDS" -lt $((BUDGET - 120)) ]; then  # document masking through flex_attention
  bench 1b_docs 1b ours-docs --warmup 3 --steps 8 --doc-len 512
else
  echo "skipping the 1b document-masking run: ${SECONDS}s used of ${BUDGET}s"
fi
step "done in ${SECONDS}s"
