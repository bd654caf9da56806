#!/usr/bin/env bash
# Train on a Cloud TPU VM or TPU pod slice: (optionally) create it, put this repository and its Python
# environment on every worker, then start the same training command on every host at once
# (gcloud ... ssh --worker=all). On a pod every host runs one process; egoexo_jax.main calls
# jax.distributed.initialize(), which finds the other hosts by itself (TPU_WORKER_HOSTNAMES), so no
# coordinator address is needed. All hosts must see the same workdir: it has to be a gs:// path.
# On every worker the training command is restarted when it exits 75 (SIGTERM, checkpoint saved:
# preempted, resumable), up to --max-restarts times; it resumes from the newest checkpoint.
# The global batch is the recipe's clips per device times the chips of the slice unless --batch sets
# it; the trainer scales the recipe's learning rates to it.
# Storage: the TPU VM's service account needs read access to the data buckets and read/write access
# to the workdir's bucket (docs/storage.md#clients); data lists, videos and teacher files may be
# gs:// URLs too (config keys after --).
set -euo pipefail

PROG=$(basename "$0")
HELP="$PROG --help"
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO_ROOT/launch/common.sh"

synopsis() {
  cat <<EOF
Usage: $PROG --tpu NAME --zone ZONE --config CFG --workdir gs://BUCKET/PATH
            [--project P] [--accelerator v4-32] [--version tpu-ubuntu2204-base] [--create]
            [--repo URL [--ref REF]] [--skip-setup] [--background]
            [--batch B] [--dtype bfloat16|float32]
            [--max-restarts N] [--dry-run] [-- extra args for egoexo_jax.main]
EOF
}

usage() {
  synopsis
  cat <<EOF

Steps (each printed as '+ command' before it runs):
  1. --create: gcloud compute tpus tpu-vm create NAME (accelerator type and software version below).
  2. Code on every worker, in ~/egoexo_jax: with --repo, 'git clone URL' (or fetch) and check out REF
     (default: the default branch); without it, a tarball of this checkout ($REPO_ROOT, without .git,
     .venv and workdirs) is copied with 'gcloud ... scp --worker=all' and unpacked.
  3. Environment on every worker: python3.11 venv in ~/egoexo_jax/.venv,
     pip install -r requirements.txt, plus jax[tpu] at the version pinned there.
  4. Training on every worker: gcloud compute tpus tpu-vm ssh NAME --worker=all --command
     'cd egoexo_jax && .venv/bin/python -m egoexo_jax.main --config=CFG --workdir=gs://...', in a loop
     that starts it again after exit status 75 (preempted, resumable: a SIGTERM stopped training after
     saving a checkpoint), at most --max-restarts times.

  --tpu NAME            TPU VM / pod slice name
  --zone ZONE           e.g. us-central2-b
  --config CFG          recipe file relative to the repository root, optionally file.py:variant
  --workdir gs://...    checkpoints, metrics and results, shared by all hosts (must start with gs://;
                        the TPU VM's service account needs read/write access to the bucket, e.g.
                        roles/storage.objectAdmin; data paths after -- may be gs:// URLs too)
  --project P           GCP project (default: gcloud's configured project)
  --accelerator T       accelerator type for --create (default v4-32)
  --version V           TPU software version for --create (default tpu-ubuntu2204-base)
  --create              create the TPU VM first
  --repo URL, --ref R   clone the code from git instead of copying this checkout
  --skip-setup          skip steps 2-3 (code and environment already on the workers)
  --background          start training with nohup on each worker (log: ~/egoexo_jax/train.log) and
                        return, instead of streaming all hosts' output until training ends
  --batch B             global training batch (default: the recipe's clips per device,
                        config.per_device_batch_size, times the chips); the trainer scales the
                        recipe's LR to it (lr = base_lr * B / config.optimizer.reference_batch_size)
  --dtype D             set config.dtype (bfloat16 or float32); default: the recipe's
  --max-restarts N      restarts of training after exit status 75 (default 10)
  --dry-run             print every command, run nothing
  -h, --help            this help
  -- ARGS...            passed unchanged to egoexo_jax.main (e.g. --config.num_epochs=10)
EOF
}

DRY_RUN=0
run() {
  printf '+ %s\n' "$(render "$@")"
  ((DRY_RUN)) || "$@"
}

TPU="" ZONE="" CONFIG="" WORKDIR="" PROJECT="" ACCELERATOR="v4-32" VERSION="tpu-ubuntu2204-base"
CREATE=0 REPO="" REF="" SKIP_SETUP=0 BACKGROUND=0 BATCH="" DTYPE="" MAX_RESTARTS=10
EXTRA=()
while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --create) CREATE=1; shift ;;
    --skip-setup) SKIP_SETUP=1; shift ;;
    --background) BACKGROUND=1; shift ;;
    --tpu|--zone|--config|--workdir|--project|--accelerator|--version|--repo|--ref|--batch|--dtype|--max-restarts)
      (($# >= 2)) && [[ $2 != --* ]] || die_usage "$1 needs a value"
      flag=$1 value=$2
      shift 2 ;&
    --*=*)
      if [[ ${flag:-} == "" ]]; then flag=${1%%=*} value=${1#*=}; shift; fi
      case $flag in
        --tpu) TPU=$value ;;
        --zone) ZONE=$value ;;
        --config) CONFIG=$value ;;
        --workdir) WORKDIR=$value ;;
        --project) PROJECT=$value ;;
        --accelerator) ACCELERATOR=$value ;;
        --version) VERSION=$value ;;
        --repo) REPO=$value ;;
        --ref) REF=$value ;;
        --batch) BATCH=$value ;;
        --dtype) DTYPE=$value ;;
        --max-restarts) MAX_RESTARTS=$value ;;
        *) die_usage "unknown argument '$flag=$value' (arguments for egoexo_jax.main go after --)" ;;
      esac
      flag="" ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die_usage "unknown argument '$1' (arguments for egoexo_jax.main go after --)" ;;
  esac
done

missing=()
[[ -n $TPU ]] || missing+=(--tpu)
[[ -n $ZONE ]] || missing+=(--zone)
[[ -n $CONFIG ]] || missing+=(--config)
[[ -n $WORKDIR ]] || missing+=(--workdir)
((${#missing[@]} == 0)) || die_usage "missing required argument(s): ${missing[*]}"
[[ $WORKDIR =~ ^gs://[^/]+ ]] \
  || die_usage "--workdir must be a gs:// path (every TPU host writes checkpoints there), got '$WORKDIR'"
[[ $TPU =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
  || die_usage "--tpu must be a TPU name (lower-case letters, digits, '-'), got '$TPU'"
[[ -z $REF || -n $REPO ]] || die_usage "--ref needs --repo"
run_overrides
[[ $MAX_RESTARTS =~ ^[0-9]+$ ]] || die_usage "--max-restarts must be a non-negative integer, got '$MAX_RESTARTS'"

GCLOUD_LOC=("--zone=$ZONE")
[[ -z $PROJECT ]] || GCLOUD_LOC+=("--project=$PROJECT")
on_all_workers() {  # on_all_workers COMMAND_STRING
  run gcloud compute tpus tpu-vm ssh "$TPU" "${GCLOUD_LOC[@]}" --worker=all --command "$1"
}

REMOTE_DIR=egoexo_jax  # relative to the home directory, where ssh commands start
TARBALL=egoexo_jax-src.tar.gz

# 1. The TPU VM / pod slice.
if ((CREATE)); then
  run gcloud compute tpus tpu-vm create "$TPU" "${GCLOUD_LOC[@]}" \
    "--accelerator-type=$ACCELERATOR" "--version=$VERSION"
fi

if ((!SKIP_SETUP)); then
  # 2. The code, on every worker.
  if [[ -n $REPO ]]; then
    fetch="if [ -d $REMOTE_DIR/.git ]; then git -C $REMOTE_DIR fetch --quiet origin; else git clone --quiet $(quote "$REPO") $REMOTE_DIR; fi"
    if [[ -n $REF ]]; then
      fetch+=" && git -C $REMOTE_DIR checkout --quiet $(quote "$REF")"
    else
      fetch+=" && git -C $REMOTE_DIR pull --quiet --ff-only"
    fi
    on_all_workers "$fetch"
  else
    local_tarball="${TMPDIR:-/tmp}/$TARBALL"
    run tar -czf "$local_tarball" -C "$REPO_ROOT" --exclude=./.git --exclude=./.venv \
      --exclude=./workdirs --exclude=__pycache__ .
    run gcloud compute tpus tpu-vm scp "$local_tarball" "$TPU:$TARBALL" "${GCLOUD_LOC[@]}" --worker=all
    on_all_workers "mkdir -p $REMOTE_DIR && tar -xzf $TARBALL -C $REMOTE_DIR && rm $TARBALL"
  fi
  # 3. The Python environment (requirements.txt pins Python 3.11 packages; Ubuntu 22.04 has 3.10).
  on_all_workers "cd $REMOTE_DIR && { command -v python3.11 >/dev/null || { sudo apt-get update -qq && sudo apt-get install -y -qq python3.11 python3.11-venv; }; } && { [ -x .venv/bin/python ] || python3.11 -m venv .venv; } && .venv/bin/pip install --quiet --upgrade pip && .venv/bin/pip install --quiet -r requirements.txt && jaxver=\$(sed -n \"s/^jax==//p\" requirements.txt) && .venv/bin/pip install --quiet \"jax[tpu]\${jaxver:+==\$jaxver}\""
fi

# 4. Training: the same command on every host, started again after exit status 75 (preempted,
# resumable), at most MAX_RESTARTS times.
TRAIN=(.venv/bin/python -m egoexo_jax.main "--config=$CONFIG" "--workdir=$WORKDIR"
       "${RUN_ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"})
LOOP="n=0; while :; do $(render "${TRAIN[@]}"); rc=\$?; { [ \$rc -eq 75 ] && [ \$n -lt $MAX_RESTARTS ]; } || exit \$rc; n=\$((n + 1)); echo \"# exit 75 (preempted, resumable): restart \$n of $MAX_RESTARTS\"; done"
if ((BACKGROUND)); then
  on_all_workers "cd $REMOTE_DIR && nohup bash -c $(quote "$LOOP") > train.log 2>&1 < /dev/null &"
else
  on_all_workers "cd $REMOTE_DIR && { $LOOP; }"
fi
