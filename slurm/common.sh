# Shared by slurm/*.sbatch (sourced, not run): find the checkout, pick the interpreter, start
# `python -m llmtrain <command>` over the allocation, and requeue the job when it was preempted.
#
# Settings (environment; sbatch passes the submitting shell's environment to the job):
#   LLMTRAIN_HOME   checkout to run from (default: the directory sbatch was called from)
#   PYTHON          interpreter with llmtrain installed (default: $LLMTRAIN_HOME/.venv/bin/python
#                   if it exists, else python3)
#   MODE            per-node (default): one srun task per node running launch/torchrun.sh, which
#                   starts NPROC_PER_NODE workers after a c10d rendezvous on the first node;
#                   per-task: one srun task per rank (needs --ntasks-per-node=<GPUs> at submission),
#                   rank from SLURM_PROCID, local rank from SLURM_LOCALID
#   NPROC_PER_NODE  per-node mode: workers per node (default: GPUs on the node, else 1)
#   OVERRIDES       space-separated KEY=VALUE config overrides, each passed as --set KEY=VALUE
#   MASTER_PORT     rendezvous port (default: derived from the job id)

llm_setup() {
  LLMTRAIN_HOME=${LLMTRAIN_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
  if [ ! -f "$LLMTRAIN_HOME/slurm/common.sh" ]; then
    echo "slurm: $LLMTRAIN_HOME is not an llmtrain checkout; submit from the checkout or set LLMTRAIN_HOME" >&2
    exit 2
  fi
  cd "$LLMTRAIN_HOME" || exit 2
  if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=$PWD/.venv/bin/python; else PYTHON=python3; fi
  fi
  EXIT_PREEMPTED=$("$PYTHON" -c 'from llmtrain.training.signals import EXIT_PREEMPTED as c; print(c)' 2>/dev/null || echo 75)
  export LLMTRAIN_HOME PYTHON EXIT_PREEMPTED
  # Since Slurm 22.05 srun no longer inherits sbatch's --cpus-per-task; without this a per-node
  # torchrun step would be confined to one core on clusters that bind tasks to cores.
  if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK; fi
  LLM_SET=()
  local kv
  for kv in ${OVERRIDES:-}; do LLM_SET+=(--set "$kv"); done
  echo "[slurm] job ${SLURM_JOB_ID:-?} ${SLURM_JOB_NAME:-} restart ${SLURM_RESTART_COUNT:-0}," \
       "nodes ${SLURM_JOB_NODELIST:-?}, $(date '+%F %T')" >&2
}

llm_first_node() {
  scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1
}

# llm_run_distributed COMMAND ARGS...: run `llmtrain COMMAND ARGS` on every node/rank of the job and
# requeue the job if it was preempted; exits the batch script with the step's status otherwise.
llm_run_distributed() {
  local nnodes=${SLURM_NNODES:-1}
  MASTER_ADDR=${MASTER_ADDR:-$(llm_first_node)}
  MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
  export MASTER_ADDR MASTER_PORT
  case "${MODE:-per-node}" in
    per-node)
      echo "[slurm] per-node: $nnodes node(s) x ${NPROC_PER_NODE:-<GPUs>} worker(s), rendezvous $MASTER_ADDR:$MASTER_PORT" >&2
      llm_srun_step --nodes="$nnodes" --ntasks="$nnodes" --ntasks-per-node=1 \
        bash launch/torchrun.sh -m llmtrain "$@" ;;
    per-task)
      # One rank per task; each task gets its share of the node's cores, not all of them.
      export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
      echo "[slurm] per-task: ${SLURM_NTASKS:-?} rank(s), master $MASTER_ADDR:$MASTER_PORT" >&2
      llm_srun_step "$PYTHON" -m llmtrain "$@" ;;
    *)
      echo "slurm: MODE=${MODE} is not per-node or per-task" >&2
      exit 2 ;;
  esac
}

# llm_srun_step SRUN_ARGS... : srun in the background so that this shell can catch the warning
# signal Slurm sends it (#SBATCH --signal=B:USR1@N), forward it to the step, and requeue.
llm_srun_step() {
  LLM_PREEMPTED=0
  srun "$@" &
  LLM_SRUN_PID=$!
  # srun passes USR1/TERM on to every process of the step; the trainers checkpoint at the next
  # step boundary and exit with EXIT_PREEMPTED.
  trap 'LLM_PREEMPTED=1; echo "[slurm] USR1: asking the step to checkpoint and stop" >&2; kill -USR1 "$LLM_SRUN_PID" 2>/dev/null' USR1
  trap 'LLM_PREEMPTED=1; echo "[slurm] TERM: asking the step to checkpoint and stop" >&2; kill -TERM "$LLM_SRUN_PID" 2>/dev/null' TERM
  local rc=0
  wait "$LLM_SRUN_PID" || rc=$?
  # A trapped signal makes `wait` return early (>128); wait again until srun is really gone.
  while [ "$rc" -gt 128 ] && kill -0 "$LLM_SRUN_PID" 2>/dev/null; do rc=0; wait "$LLM_SRUN_PID" || rc=$?; done
  trap - USR1 TERM
  llm_finish "$rc"
}

# llm_finish RC: requeue on preemption (the requeued job resumes from `latest`), else exit with RC.
llm_finish() {
  local rc=$1
  if [ "$rc" = "$EXIT_PREEMPTED" ] || { [ "$LLM_PREEMPTED" = 1 ] && [ "$rc" != 0 ]; }; then
    echo "[slurm] step stopped for preemption (exit $rc): requeueing job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID" && exit 0
    echo "[slurm] scontrol requeue failed (job submitted with --no-requeue, or JobRequeue=0?)" >&2
    exit "$rc"
  fi
  echo "[slurm] step finished with exit code $rc, $(date '+%F %T')" >&2
  exit "$rc"
}
