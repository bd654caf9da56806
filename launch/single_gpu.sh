#!/usr/bin/env bash
# Train on one machine (one GPU, or all local devices of one host).
#
# Runs
#     $PYTHON -m egoexo_jax.main --config=CFG --workdir=DIR --config.batch_from_devices=True \
#         --config.dtype=bfloat16 [extra args]
# i.e. the recipe's clips per device (config.per_device_batch_size: what one GPU of the original run
# processed) on each local device; --batch B sets the global batch instead. The trainer scales the
# recipe's learning rates to the batch by the linear rule and prints them.
# Exit status 75 from egoexo_jax.main means "preempted, resumable" (SIGTERM, checkpoint saved): when
# the training process alone got that SIGTERM, this script starts it again and it resumes.
set -euo pipefail

PROG=$(basename "$0")
HELP="$PROG --help"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

synopsis() {
  cat <<EOF
Usage: $PROG --config CFG --workdir DIR [--batch B] [--dtype bfloat16|float32] [--max-restarts N]
            [--dry-run] [-- extra args for egoexo_jax.main]
EOF
}

usage() {
  synopsis
  cat <<EOF

Runs python -m egoexo_jax.main on this machine. The global batch is the recipe's clips per device
(config.per_device_batch_size) times the local devices unless --batch sets it; the trainer scales
the recipe's learning rates to that batch (lr = base_lr * batch / config.optimizer.reference_batch_size)
and prints them.

  --config CFG            recipe file, optionally file.py:variant (e.g. configs/pretrain.py)
  --workdir DIR           checkpoints, metrics and results (resumes from the newest checkpoint there)
  --batch B               global training batch (clips per step), a positive integer
  --dtype D               compute dtype (default bfloat16)
  --max-restarts N        restarts after exit status 75 (default 10; see below)
  --dry-run               print the command, run nothing
  -h, --help              this help
  -- ARGS...              passed unchanged to egoexo_jax.main (e.g. --config.num_epochs=10)

Preemption: egoexo_jax.main exits 75 when a SIGTERM stopped training after saving a checkpoint
(preempted, resumable). If that SIGTERM went to the training process alone (a scheduler or
orchestrator preempting it), this script runs the same command again, up to N times; it resumes
from the checkpoint. A SIGTERM or Ctrl-C sent to this script is passed on to the training process
(which saves and stops) and nothing is restarted.

Environment: PYTHON (default: python) is the interpreter that runs egoexo_jax.main.
Example: $PROG --config configs/finetune_charades_ego.py --workdir /tmp/ce --batch 16
             # -> --config.batch_size=16; the trainer uses the base LR 0.25 * 16 / 64 = 0.0625
EOF
}

CONFIG="" WORKDIR="" BATCH="" DTYPE="bfloat16" DRY_RUN=0 MAX_RESTARTS=10
EXTRA=()
while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --config|--workdir|--batch|--dtype|--max-restarts)
      (($# >= 2)) && [[ $2 != --* ]] || die_usage "$1 needs a value"
      case $1 in
        --config) CONFIG=$2 ;;
        --workdir) WORKDIR=$2 ;;
        --batch) BATCH=$2 ;;
        --dtype) DTYPE=$2 ;;
        --max-restarts) MAX_RESTARTS=$2 ;;
      esac
      shift 2 ;;
    --config=*|--workdir=*|--batch=*|--dtype=*|--max-restarts=*)
      value=${1#*=}
      case $1 in
        --config=*) CONFIG=$value ;;
        --workdir=*) WORKDIR=$value ;;
        --batch=*) BATCH=$value ;;
        --dtype=*) DTYPE=$value ;;
        --max-restarts=*) MAX_RESTARTS=$value ;;
      esac
      shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die_usage "unknown argument '$1' (arguments for egoexo_jax.main go after --)" ;;
  esac
done

missing=()
[[ -n $CONFIG ]] || missing+=(--config)
[[ -n $WORKDIR ]] || missing+=(--workdir)
((${#missing[@]} == 0)) || die_usage "missing required argument(s): ${missing[*]}"
[[ -n $DTYPE ]] || die_usage "--dtype must be bfloat16 or float32, got ''"
run_overrides
[[ $MAX_RESTARTS =~ ^[0-9]+$ ]] \
  || die_usage "--max-restarts must be a non-negative integer, got '$MAX_RESTARTS'"

CMD=("${PYTHON:-python}" -m egoexo_jax.main "--config=$CONFIG" "--workdir=$WORKDIR" "${RUN_ARGS[@]}"
     ${EXTRA[@]+"${EXTRA[@]}"})
printf '+ %s\n' "$(render "${CMD[@]}")"
((DRY_RUN)) && exit 0

CHILD="" STOP=0
forward() { TRAPPED=1 STOP=1; [[ -z $CHILD ]] || kill -TERM "$CHILD" 2>/dev/null || true; }
trap forward TERM INT
restarts=0
while :; do
  "${CMD[@]}" &
  CHILD=$!
  wait_child "$CHILD"
  rc=$CHILD_RC
  CHILD=""
  if ((rc == PREEMPTED && !STOP && restarts < MAX_RESTARTS)); then
    restarts=$((restarts + 1))
    echo "# exit $PREEMPTED (preempted, resumable): restart $restarts of $MAX_RESTARTS, resuming from the newest checkpoint"
    continue
  fi
  exit "$rc"
done
