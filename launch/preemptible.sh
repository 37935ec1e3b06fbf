#!/usr/bin/env bash
# Run any launcher so that preemption ends the job with llmtrain's requeue code (75, EX_TEMPFAIL),
# whatever the launcher itself would report:
#
#   launch/preemptible.sh accelerate launch --config_file launch/accelerate/multi_gpu.yaml -m llmtrain train ...
#   launch/preemptible.sh deepspeed --num_gpus 8 --module llmtrain train ...
#
# Why: on SIGTERM `accelerate launch` (torch elastic underneath) forwards the signal, the workers
# checkpoint and exit 75, and accelerate then exits 1 with a SignalException traceback; the
# `deepspeed` runner dies of SIGTERM itself (exit 143) without telling its workers, which run on.
# A requeue script could not tell a preemption from a crash. (torchrun: launch/torchrun.sh does the same.)
#
# What it does: the launcher runs with SIGUSR1 ignored (launchers inherit that, so none of them dies of
# it, while llmtrain's workers install their own handler). SIGTERM, SIGUSR1 or SIGINT to this script is
# passed to every process under the launcher as SIGUSR1, llmtrain's "checkpoint at the next step and
# exit 75" request; the launchers ignore it and simply see their workers exit. If this script was
# signalled and the launcher then exits non-zero, the script exits 75; otherwise with the launcher's
# code (a worker's 75 that the launcher passes on, as the deepspeed launcher does, stays 75).
# Environment: EXIT_PREEMPTED overrides 75.
set -uo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: launch/preemptible.sh LAUNCHER [ARGS...]   (e.g. accelerate launch ..., deepspeed ...)" >&2
  exit 2
fi
EXIT_PREEMPTED=${EXIT_PREEMPTED:-75}

( trap '' USR1; exec "$@" ) &
pid=$!

descendants() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

signalled=0
forward() {
  signalled=1
  echo "preemptible.sh: $1 received; asking the workers to checkpoint and exit (SIGUSR1)" >&2
  # shellcheck disable=SC2046
  kill -USR1 $(descendants "$pid") 2>/dev/null
}
trap 'forward SIGTERM' TERM
trap 'forward SIGUSR1' USR1
trap 'forward SIGINT' INT

rc=0
wait "$pid" || rc=$?
# `wait` returns early (>128) when a trapped signal arrives; wait again until the launcher is gone.
while [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null; do rc=0; wait "$pid" || rc=$?; done
if [ "$signalled" = 1 ] && [ "$rc" != 0 ]; then
  echo "preemptible.sh: preempted (launcher exit $rc); exiting with $EXIT_PREEMPTED so the job can be requeued" >&2
  exit "$EXIT_PREEMPTED"
fi
exit "$rc"
