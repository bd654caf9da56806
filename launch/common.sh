# Shell helpers shared by the launchers in this folder; sourced by them, not run. A launcher sets
# PROG (its name in messages), HELP (how to ask it for help) and defines synopsis() first.

PREEMPTED=75  # egoexo_jax.main's exit status after a SIGTERM-stopped, checkpointed run (resumable)

# Shell-quotes one word only when it needs it, so printed commands can be pasted back.
quote() {
  local s=$1
  if [[ -n $s && $s =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

# The words of a command, quoted where needed, on one line.
render() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote "$word")"
  done
  printf '%s' "$out"
}

# A usage error: the message, the synopsis and where to find help on stderr; exit status 2.
die_usage() {
  echo "$PROG: error: $*" >&2
  synopsis >&2
  echo "Try '$HELP' for more." >&2
  exit 2
}

# RUN_ARGS: the egoexo_jax.main overrides for the launcher's BATCH and DTYPE (either may be empty).
# Without a batch the run takes the recipe's clips per device times its devices
# (config.batch_from_devices); either way the trainer scales the recipe's LR linearly.
run_overrides() {
  RUN_ARGS=()
  if [[ -n $BATCH ]]; then
    [[ $BATCH =~ ^[1-9][0-9]*$ ]] || die_usage "--batch must be a positive integer, got '$BATCH'"
    RUN_ARGS+=("--config.batch_size=$BATCH")
  else
    RUN_ARGS+=("--config.batch_from_devices=True")
  fi
  if [[ -n $DTYPE ]]; then
    [[ $DTYPE == bfloat16 || $DTYPE == float32 ]] \
      || die_usage "--dtype must be bfloat16 or float32, got '$DTYPE'"
    RUN_ARGS+=("--config.dtype=$DTYPE")
  fi
}

# CHILD_RC: the exit status of the background process $1. A signal this script traps makes `wait`
# return early with a status > 128 (the trap handler, which sets TRAPPED=1, runs right after), while
# the process may still be running or may just have exited: wait again for its own status.
TRAPPED=0
wait_child() {
  while :; do
    TRAPPED=0
    CHILD_RC=0
    wait "$1" || CHILD_RC=$?
    ((TRAPPED && CHILD_RC > 128)) || return 0
  done
}
