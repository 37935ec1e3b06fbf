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
#   MASTER_PORT     rendezvous port (default: derived from the job id; +1 for each in-job retry)
#   MAX_RESTARTS    failed steps (a rank crashed, a node died) retried per job before giving up
#                   (default 3; counted across requeues; preemption requeues do not count)
#   EXCLUDE_FAILED_NODES  1: after a failure, requeue the job without the nodes srun reported the
#                   failed tasks on, instead of retrying in the same allocation (default 0; nodes
#                   Slurm itself marks DOWN/DRAIN/FAIL/NOT_RESPONDING are always excluded)
#   LOG_DIR         per-rank logs (default logs/<job name>-<job id>): rank-<r>.out per rank
#                   (per-task mode) or torchrun's <attempt>/attempt_<n>/<local rank>/ files per node
#   TORCHRUN_MAX_RESTARTS  per-node mode: torchrun restarts its workers in place this many times
#                   before the step fails (default 0: a failure ends the step at once, and the
#                   job-level retry above resumes every node from `latest`)

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
  LOG_DIR=${LOG_DIR:-logs/${SLURM_JOB_NAME:-llmtrain}-${SLURM_JOB_ID:-0}}
  mkdir -p "$LOG_DIR"
  export LOG_DIR
  LLM_ATTEMPT=0
  echo "[slurm] job ${SLURM_JOB_ID:-?} ${SLURM_JOB_NAME:-} restart ${SLURM_RESTART_COUNT:-0}," \
       "nodes ${SLURM_JOB_NODELIST:-?}, per-rank logs in $LOG_DIR, $(date '+%F %T')" >&2
}

llm_first_node() {
  scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1
}

# llm_run_distributed COMMAND ARGS...: run `llmtrain COMMAND ARGS` on every node/rank of the job and
# requeue the job if it was preempted; exits the batch script with the step's status otherwise.
# A failed step (not a preemption) is retried in the same allocation, resuming from `latest`
# (the commands run with --resume auto), up to MAX_RESTARTS times per job; see llm_finish.
llm_run_distributed() {
  local nnodes=${SLURM_NNODES:-1} base_port
  MASTER_ADDR=${MASTER_ADDR:-$(llm_first_node)}
  base_port=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
  export MASTER_ADDR
  while true; do
    # a fresh port per attempt: the last attempt's store may still hold the old one (TIME_WAIT)
    export MASTER_PORT=$((base_port + LLM_ATTEMPT))
    case "${MODE:-per-node}" in
      per-node)
        echo "[slurm] per-node: $nnodes node(s) x ${NPROC_PER_NODE:-<GPUs>} worker(s), rendezvous $MASTER_ADDR:$MASTER_PORT" >&2
        export TORCHRUN_LOG_DIR="$LOG_DIR/attempt${SLURM_RESTART_COUNT:-0}.${LLM_ATTEMPT}"
        llm_srun_step --nodes="$nnodes" --ntasks="$nnodes" --ntasks-per-node=1 \
          bash launch/torchrun.sh -m llmtrain "$@" ;;
      per-task)
        # One rank per task; each task gets its share of the node's cores, not all of them.
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
        echo "[slurm] per-task: ${SLURM_NTASKS:-?} rank(s), master $MASTER_ADDR:$MASTER_PORT" >&2
        # each rank's output also goes to LOG_DIR/rank-<r>.out; tee ignores the preemption signals
        # srun sends to every process of the step, so it outlives the trainer it records
        llm_srun_step --label bash -c 'exec > >(trap "" USR1 TERM; exec tee -a "$LOG_DIR/rank-$SLURM_PROCID.out") 2>&1
                                        exec "$@"' rank "$PYTHON" -m llmtrain "$@" ;;
      *)
        echo "slurm: MODE=${MODE} is not per-node or per-task" >&2
        exit 2 ;;
    esac
    LLM_ATTEMPT=$((LLM_ATTEMPT + 1))
  done
}

# llm_srun_step SRUN_ARGS... : srun in the background so that this shell can catch the warning
# signal Slurm sends it (#SBATCH --signal=B:USR1@N), forward it to the step, and requeue.
# --kill-on-bad-exit: one task failing ends the step at once; the survivors would otherwise wait in
# a collective until train.collective_timeout_s. srun's own messages are kept to find failed nodes.
llm_srun_step() {
  LLM_PREEMPTED=0
  LLM_STEP_ERR="$LOG_DIR/srun-${SLURM_RESTART_COUNT:-0}.${LLM_ATTEMPT}.err"
  srun --kill-on-bad-exit=1 "$@" \
    2> >(trap '' USR1 TERM; exec tee >(grep --line-buffered '^srun: ' >> "$LLM_STEP_ERR") >&2) &
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
  [ "$rc" = 0 ] && exit 0
  llm_retry_or_exit "$rc"
}

# llm_retry_or_exit RC: after a failed step, return (the caller retries in this allocation), requeue
# the job without failed nodes, or exit RC once MAX_RESTARTS failures are used up.
llm_retry_or_exit() {
  local rc=$1 counter failures bad reported
  counter="$LOG_DIR/failures"  # LOG_DIR is per job id, so the count survives requeues
  failures=$(( $(cat "$counter" 2>/dev/null || echo 0) + 1 ))
  echo "$failures" > "$counter"
  if [ "$failures" -gt "${MAX_RESTARTS:-3}" ]; then
    echo "[slurm] step failed (exit $rc) for the ${failures}th time; MAX_RESTARTS=${MAX_RESTARTS:-3} used up," \
         "giving up. Per-rank logs: $LOG_DIR" >&2
    exit "$rc"
  fi
  # nodes Slurm itself considers broken, and the nodes srun reported failed tasks on
  bad=$(sinfo -h -N -n "${SLURM_JOB_NODELIST:-}" -o "%N %T" 2>/dev/null \
        | awk 'tolower($2) ~ /down|drain|fail|not_responding|\*/ {print $1}' | sort -u | paste -sd, -)
  reported=$(sed -n 's/^srun: error: \([^:]*\): task.*/\1/p' "$LLM_STEP_ERR" 2>/dev/null | sort -u | paste -sd, -)
  if [ "${EXCLUDE_FAILED_NODES:-0}" = 1 ] && [ -n "$reported" ]; then bad=${bad:+$bad,}$reported; fi
  if [ -n "$bad" ]; then
    echo "[slurm] step failed (exit $rc, failure $failures/${MAX_RESTARTS:-3}); requeueing job $SLURM_JOB_ID" \
         "without node(s) $bad" >&2
    if scontrol requeue "$SLURM_JOB_ID"; then
      scontrol update JobId="$SLURM_JOB_ID" ExcNodeList="$bad" \
        || echo "[slurm] could not exclude $bad (scontrol update refused); the job may get them again" >&2
      exit 0
    fi
    echo "[slurm] scontrol requeue failed; retrying in this allocation" >&2
  fi
  echo "[slurm] step failed (exit $rc${reported:+ on $reported}, failure $failures/${MAX_RESTARTS:-3});" \
       "restarting it in this allocation from the last checkpoint" >&2
  return 0
}
