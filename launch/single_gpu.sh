#!/usr/bin/env bash
# Train on one machine (one GPU, or all local devices of one host) with the linearly scaled LR.
#
# The recipe's base LR is tuned for its reference batch (config.optimizer.reference_batch_size, e.g.
# 512 clips for K400 pre-training at 0.8). This script applies the linear scaling rule
#     lr = base_lr * batch / reference_batch
# from the values given on the command line (the recipe file is not imported) and runs
#     $PYTHON -m egoexo_jax.main --config=CFG --workdir=DIR --config.batch_size=B \
#         --config.optimizer.base_lr=<scaled> --config.dtype=bfloat16 [extra args]
# Exit status 75 from egoexo_jax.main means "preempted, resumable" (SIGTERM, checkpoint saved): when
# the training process alone got that SIGTERM, this script starts it again and it resumes.
set -euo pipefail

PROG=$(basename "$0")

synopsis() {
  cat <<EOF
Usage: $PROG --config CFG --workdir DIR --batch B --base-lr LR --reference-batch RB
            [--dtype bfloat16|float32] [--max-restarts N] [--dry-run] [-- extra args for egoexo_jax.main]
EOF
}

usage() {
  synopsis
  cat <<EOF

Runs python -m egoexo_jax.main on this machine with the global batch B and the base LR scaled by the
linear rule  lr = LR * B / RB  (RB: the recipe's config.optimizer.reference_batch_size).

  --config CFG            recipe file, optionally file.py:variant (e.g. configs/charades_ego.py)
  --workdir DIR           checkpoints, metrics and results (resumes from the newest checkpoint there)
  --batch B               global training batch (clips per step), a positive integer
  --base-lr LR            the recipe's base LR at its reference batch (e.g. 0.25)
  --reference-batch RB    the batch LR was tuned for (e.g. 64)
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
Example: $PROG --config configs/charades_ego.py --workdir /tmp/ce --batch 16 --base-lr 0.25 \\
             --reference-batch 64   # -> --config.optimizer.base_lr=0.0625
EOF
}

die_usage() {
  echo "$PROG: error: $*" >&2
  synopsis >&2
  echo "Try '$PROG --help' for more." >&2
  exit 2
}

# Shell-quotes one word only when it needs it, so the printed command can be pasted back.
quote() {
  local s=$1
  if [[ -n $s && $s =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

render() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote "$word")"
  done
  printf '%s' "$out"
}

CONFIG="" WORKDIR="" BATCH="" BASE_LR="" REF_BATCH="" DTYPE="bfloat16" DRY_RUN=0 MAX_RESTARTS=10
EXTRA=()
while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --config|--workdir|--batch|--base-lr|--reference-batch|--dtype|--max-restarts)
      (($# >= 2)) && [[ $2 != --* ]] || die_usage "$1 needs a value"
      case $1 in
        --config) CONFIG=$2 ;;
        --workdir) WORKDIR=$2 ;;
        --batch) BATCH=$2 ;;
        --base-lr) BASE_LR=$2 ;;
        --reference-batch) REF_BATCH=$2 ;;
        --dtype) DTYPE=$2 ;;
        --max-restarts) MAX_RESTARTS=$2 ;;
      esac
      shift 2 ;;
    --config=*|--workdir=*|--batch=*|--base-lr=*|--reference-batch=*|--dtype=*|--max-restarts=*)
      value=${1#*=}
      case $1 in
        --config=*) CONFIG=$value ;;
        --workdir=*) WORKDIR=$value ;;
        --batch=*) BATCH=$value ;;
        --base-lr=*) BASE_LR=$value ;;
        --reference-batch=*) REF_BATCH=$value ;;
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
[[ -n $BATCH ]] || missing+=(--batch)
[[ -n $BASE_LR ]] || missing+=(--base-lr)
[[ -n $REF_BATCH ]] || missing+=(--reference-batch)
((${#missing[@]} == 0)) || die_usage "missing required argument(s): ${missing[*]}"
[[ $BATCH =~ ^[1-9][0-9]*$ ]] || die_usage "--batch must be a positive integer, got '$BATCH'"
[[ $REF_BATCH =~ ^[1-9][0-9]*$ ]] || die_usage "--reference-batch must be a positive integer, got '$REF_BATCH'"
[[ $BASE_LR =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]] \
  || die_usage "--base-lr must be a non-negative number, got '$BASE_LR'"
[[ $DTYPE == bfloat16 || $DTYPE == float32 ]] || die_usage "--dtype must be bfloat16 or float32, got '$DTYPE'"
[[ $MAX_RESTARTS =~ ^[0-9]+$ ]] || die_usage "--max-restarts must be a non-negative integer, got '$MAX_RESTARTS'"

LR=$(LC_ALL=C awk -v lr="$BASE_LR" -v b="$BATCH" -v rb="$REF_BATCH" 'BEGIN { printf "%.12g", lr * b / rb }')
echo "# linear scaling rule: lr = base_lr * batch / reference_batch = $BASE_LR * $BATCH / $REF_BATCH = $LR"

CMD=("${PYTHON:-python}" -m egoexo_jax.main "--config=$CONFIG" "--workdir=$WORKDIR"
     "--config.batch_size=$BATCH" "--config.optimizer.base_lr=$LR" "--config.dtype=$DTYPE"
     ${EXTRA[@]+"${EXTRA[@]}"})
printf '+ %s\n' "$(render "${CMD[@]}")"
((DRY_RUN)) && exit 0

PREEMPTED=75  # egoexo_jax.main: stopped by SIGTERM after saving a checkpoint (resumable)
CHILD="" STOP=0
forward() { STOP=1; [[ -z $CHILD ]] || kill -TERM "$CHILD" 2>/dev/null || true; }
trap forward TERM INT
restarts=0
while :; do
  "${CMD[@]}" &
  CHILD=$!
  rc=0
  wait "$CHILD" || rc=$?
  while kill -0 "$CHILD" 2>/dev/null; do  # a trapped signal interrupted wait: keep waiting
    rc=0
    wait "$CHILD" || rc=$?
  done
  CHILD=""
  if ((rc == PREEMPTED && !STOP && restarts < MAX_RESTARTS)); then
    restarts=$((restarts + 1))
    echo "# exit $PREEMPTED (preempted, resumable): restart $restarts of $MAX_RESTARTS, resuming from the newest checkpoint"
    continue
  fi
  exit "$rc"
done
