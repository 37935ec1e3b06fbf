#!/usr/bin/env bash
# One node's launcher: torchrun with a c10d rendezvous, configured from the environment so that the
# same line works on a workstation, on each host of a multi-node job, and as the srun task of
# slurm/pretrain.sbatch. Everything after the options goes to torchrun:
#
#   launch/torchrun.sh -m llmtrain train --config configs/pretrain/tiny.yaml      # this machine
#   NNODES=2 MASTER_ADDR=node1 launch/torchrun.sh -m llmtrain train --config ...  # on each of 2 hosts
#
# Environment (Slurm's values are used when present):
#   NNODES          hosts taking part (SLURM_NNODES, else 1)
#   NPROC_PER_NODE  processes on this host (GPUs visible, else 1)
#   MASTER_ADDR     rendezvous host, any of the nodes (first host of SLURM_JOB_NODELIST, else 127.0.0.1)
#   MASTER_PORT     rendezvous port (derived from SLURM_JOB_ID, else 29500)
#   RDZV_ID         rendezvous id shared by the hosts of one run (SLURM_JOB_ID, else "llmtrain")
#   LOCAL_ADDR      this host's address as the other hosts reach it (default: torchrun resolves the
#                   host name; set it where the name resolves to a loopback or a wrong interface)
#   PYTHON          interpreter with llmtrain installed (default: python3)
#   TORCHRUN_MAX_RESTARTS  times torchrun restarts this host's workers after one fails (default 0);
#                   each restart resumes from `latest` (the commands run with --resume auto)
#   TORCHRUN_LOG_DIR  per-rank logs: torchrun writes each worker's stdout/stderr under this
#                   directory (and still to the console)
#
# Preemption: torchrun itself ignores SIGUSR1 (its default action would kill it and orphan the
# workers); the workers receive the signal (Slurm signals every process of the step; outside Slurm
# this script forwards it), checkpoint at the next step boundary and exit. When that happened this
# script exits with llmtrain's preemption code, which torchrun would otherwise turn into 1.
set -uo pipefail

PYTHON=${PYTHON:-python3}
NNODES=${NNODES:-${SLURM_NNODES:-1}}
if [ -z "${NPROC_PER_NODE:-}" ]; then
  NPROC_PER_NODE=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ "${NPROC_PER_NODE:-0}" -gt 0 ] 2>/dev/null || NPROC_PER_NODE=1
fi
if [ -z "${MASTER_ADDR:-}" ]; then
  if [ -n "${SLURM_JOB_NODELIST:-}" ]; then
    MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
  else
    MASTER_ADDR=127.0.0.1
  fi
fi
if [ -z "${MASTER_PORT:-}" ]; then
  if [ -n "${SLURM_JOB_ID:-}" ]; then MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000)); else MASTER_PORT=29500; fi
fi
RDZV_ID=${RDZV_ID:-${SLURM_JOB_ID:-llmtrain}}
# torchrun's own default for several processes per host, said outright so that it prints no banner about it
if [ -z "${OMP_NUM_THREADS:-}" ] && [ "$NPROC_PER_NODE" -gt 1 ] 2>/dev/null; then export OMP_NUM_THREADS=1; fi
LOCAL_ADDR_ARGS=()
if [ -n "${LOCAL_ADDR:-}" ]; then
  LOCAL_ADDR_ARGS=(--local_addr "$LOCAL_ADDR")
  # torchrun guesses whether it hosts the rendezvous store from the host name; say it outright.
  if [ "$LOCAL_ADDR" = "$MASTER_ADDR" ]; then LOCAL_ADDR_ARGS+=(--rdzv_conf is_host=true); fi
fi
EXTRA_ARGS=(--max_restarts "${TORCHRUN_MAX_RESTARTS:-0}")
if [ -n "${TORCHRUN_LOG_DIR:-}" ]; then
  mkdir -p "$TORCHRUN_LOG_DIR/node${SLURM_NODEID:-0}"
  EXTRA_ARGS+=(--log_dir "$TORCHRUN_LOG_DIR/node${SLURM_NODEID:-0}" --tee 3)  # files per rank, and the console as before
fi
EXIT_PREEMPTED=${EXIT_PREEMPTED:-$("$PYTHON" -c 'from llmtrain.training.signals import EXIT_PREEMPTED as c; print(c)' 2>/dev/null || echo 75)}

# MASTER_* name the rendezvous here; torchrun gives the workers their own MASTER_ADDR/PORT.
( trap '' USR1; exec "$PYTHON" -m torch.distributed.run \
    --nnodes "$NNODES" --nproc_per_node "$NPROC_PER_NODE" \
    --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv_id "$RDZV_ID" \
    "${LOCAL_ADDR_ARGS[@]}" "${EXTRA_ARGS[@]}" "$@" ) &
pid=$!

signalled=0
trap 'signalled=1; pkill -USR1 -P "$pid" 2>/dev/null' USR1
trap 'signalled=1; kill -TERM "$pid" 2>/dev/null' TERM

rc=0
wait "$pid" || rc=$?
# `wait` returns early (>128) when a trapped signal arrives; wait again until torchrun is gone.
while [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null; do rc=0; wait "$pid" || rc=$?; done
if [ "$signalled" = 1 ] && [ "$rc" != 0 ]; then
  echo "torchrun.sh: preempted (torchrun exit $rc); exiting with $EXIT_PREEMPTED so the job can be requeued" >&2
  exit "$EXIT_PREEMPTED"
fi
exit "$rc"
