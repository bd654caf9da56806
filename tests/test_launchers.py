"""Launcher scripts in launch/: dry runs print the exact commands, bad arguments exit 2.

Nothing here needs gcloud, sbatch or srun: dry runs never call them (a fake on PATH would record
it), and the real-run tests put recording fakes on PATH.
"""

import os
import pathlib
import re
import shlex
import signal
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SINGLE = LAUNCH / "single_gpu.sh"
TPU = LAUNCH / "tpu_pod.sh"
SLURM = LAUNCH / "slurm.sbatch"

FAKE = """#!/usr/bin/env bash
{{ printf '%s\\n' "$(basename "$0") $PWD ${{JAX_COORDINATOR_ADDRESS:-}}"; printf '%s\\n' "$@"; echo ---; }} >> {log}
if [ -s {codes} ]; then rc=$(head -n 1 {codes}); sed -i 1d {codes}; exit "$rc"; fi
"""


@pytest.fixture
def sandbox(tmp_path):
    """Clean environment (no SLURM_* variables) whose PATH starts with recording fakes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    codes = tmp_path / "exit_codes"  # one exit status per line, used by the fakes' calls in turn
    for name in ("gcloud", "srun", "sbatch", "scontrol", "tar", "fakepython"):
        fake = bin_dir / name
        fake.write_text(FAKE.format(log=shlex.quote(str(log)), codes=shlex.quote(str(codes))))
        fake.chmod(0o755)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp), "LC_ALL": "C"}

    def calls():
        """[(program, cwd, JAX_COORDINATOR_ADDRESS, [args...]), ...] recorded by the fakes."""
        if not log.exists():
            return []
        out = []
        for block in log.read_text().split("---\n")[:-1]:
            head, *args = block.rstrip("\n").split("\n")
            prog, cwd, coord = (head.split(" ") + [""])[:3]
            out.append((prog, cwd, coord, args))
        return out

    def exit_codes(*values):
        codes.write_text("".join(f"{v}\n" for v in values))

    return {"env": env, "calls": calls, "tmp": tmp, "path": tmp_path, "exit_codes": exit_codes}


def run(script, *args, env, extra_env=None, cwd=None, via_bash=False):
    full_env = dict(env, **(extra_env or {}))
    cmd = (["bash", str(script)] if via_bash else [str(script)]) + list(args)
    return subprocess.run(cmd, env=full_env, cwd=cwd or REPO, capture_output=True, text=True, timeout=60)


def plus_lines(stdout):
    return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


def assert_usage_error(proc, *fragments):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Usage:" in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr
    assert "+ " not in proc.stdout  # nothing printed as run


# ----------------------------------------------------------------------------------- all scripts


@pytest.mark.parametrize("script", [SINGLE, TPU, SLURM])
def test_scripts_are_executable_strict_bash(script):
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", [SINGLE, TPU, SLURM])
def test_help(script, sandbox):
    proc = run(script, "--help", env=sandbox["env"], via_bash=script is SLURM)
    assert proc.returncode == 0
    assert proc.stdout.startswith("Usage:")
    assert run(script, "-h", env=sandbox["env"], via_bash=script is SLURM).stdout == proc.stdout


# ----------------------------------------------------------------------------------- single_gpu.sh

SINGLE_ARGS = ["--config", "configs/finetune_charades_ego.py", "--workdir", "/tmp/ce run", "--batch", "16"]
SLURM_ARGS = ["--config", "c.py", "--workdir", "/w"]


def test_single_gpu_dry_run_exact(sandbox):
    proc = run(
        SINGLE, *SINGLE_ARGS, "--dry-run", "--", "--config.num_epochs=10", "--config.note=it's", env=sandbox["env"]
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [  # the trainer scales the LR to the batch itself
        "+ python -m egoexo_jax.main --config=configs/finetune_charades_ego.py '--workdir=/tmp/ce run' "
        "--config.batch_size=16 --config.dtype=bfloat16 "
        "--config.num_epochs=10 '--config.note=it'\\''s'",
    ]
    assert sandbox["calls"]() == []


@pytest.mark.parametrize(
    "args,expected",
    [
        ((), "--config.batch_from_devices=True --config.dtype=bfloat16"),  # the recipe's per-device batch
        (("--batch", "64"), "--config.batch_size=64 --config.dtype=bfloat16"),
        (("--batch=3", "--dtype", "float32"), "--config.batch_size=3 --config.dtype=float32"),
    ],
)
def test_single_gpu_needs_only_config_and_workdir(sandbox, args, expected):
    proc = run(SINGLE, "--config", "configs/pretrain.py", "--workdir", "W", *args, "--dry-run", env=sandbox["env"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"+ python -m egoexo_jax.main --config=configs/pretrain.py --workdir=W {expected}"
    ]


def test_single_gpu_dry_run_prints_a_runnable_command(sandbox, tmp_path):
    """The printed command's flags parse, its overrides name existing keys, and its config (the
    recipe at 8 clips on one device, LR scaled by the trainer) validates for one device."""
    from absl import flags  # pylint: disable=import-outside-toplevel
    from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

    from egoexo_jax import batch_scaling, config_schema, recipe  # pylint: disable=import-outside-toplevel

    proc = run(SINGLE, "--config", "configs/pretrain.py", "--workdir", str(tmp_path), "--dry-run", env=sandbox["env"])
    [line] = plus_lines(proc.stdout)
    words = shlex.split(line)
    assert words[:3] == ["python", "-m", "egoexo_jax.main"]
    argv = [f"{REPO}/{w[len('--config=') :]}" if w.startswith("--config=") else w for w in words[3:]]
    argv = [f"--config={a}" if not a.startswith("--") else a for a in argv]
    recipe.check_argv(argv)
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=["main"] + argv)
    flags.DEFINE_string("workdir", None, "", flag_values=fv)
    fv(["main"] + argv)
    assert fv.workdir == str(tmp_path)
    c = batch_scaling.resolve_batch(fv.config, num_devices=1)
    config_schema.validate(c, num_devices=1)
    assert (c.batch_size, c.dtype) == (8, "bfloat16")
    assert batch_scaling.lr_scale(c) == 8 / 512


def test_single_gpu_real_run_passes_arguments_unchanged(sandbox):
    proc = run(SINGLE, *SINGLE_ARGS, "--", "--config.x=a b", env=sandbox["env"], extra_env={"PYTHON": "fakepython"})
    assert proc.returncode == 0, proc.stderr
    assert plus_lines(proc.stdout)[0].startswith("fakepython -m egoexo_jax.main ")
    [(prog, cwd, _, args)] = sandbox["calls"]()
    assert prog == "fakepython" and cwd == str(REPO)
    assert args == [
        "-m",
        "egoexo_jax.main",
        "--config=configs/finetune_charades_ego.py",
        "--workdir=/tmp/ce run",
        "--config.batch_size=16",
        "--config.dtype=bfloat16",
        "--config.x=a b",
    ]


@pytest.mark.parametrize(
    "args,fragment",
    [
        ([], "missing required argument(s): --config --workdir"),
        (SINGLE_ARGS[2:], "missing required argument(s): --config"),
        (SINGLE_ARGS + ["--bogus"], "unknown argument '--bogus'"),
        (SINGLE_ARGS + ["--base-lr", "0.1"], "unknown argument '--base-lr'"),  # the trainer scales the LR
        (SINGLE_ARGS + ["--config.num_epochs=3"], "unknown argument '--config.num_epochs=3'"),
        (SINGLE_ARGS[:-1], "--batch needs a value"),
        (["--config", "--workdir", "w"], "--config needs a value"),
        (SINGLE_ARGS + ["--batch", "0"], "--batch must be a positive integer"),
        (SINGLE_ARGS + ["--batch", "8.5"], "--batch must be a positive integer"),
        (SINGLE_ARGS + ["--dtype", "float16"], "--dtype must be bfloat16 or float32"),
    ],
)
def test_single_gpu_bad_arguments(sandbox, args, fragment):
    proc = run(SINGLE, *args, "--dry-run", env=sandbox["env"])
    assert_usage_error(proc, fragment)
    assert sandbox["calls"]() == []


# ----------------------------------------------------------------------------------- tpu_pod.sh

TPU_ARGS = [
    "--tpu",
    "egoexo-v4",
    "--zone",
    "us-central2-b",
    "--config",
    "configs/k400_egoexo.py",
    "--workdir",
    "gs://my-bucket/runs/k400",
]
INSTALL = (
    "cd egoexo_jax && { command -v python3.11 >/dev/null || { sudo apt-get update -qq && "
    "sudo apt-get install -y -qq python3.11 python3.11-venv; }; } && "
    "{ [ -x .venv/bin/python ] || python3.11 -m venv .venv; } && "
    ".venv/bin/pip install --quiet --upgrade pip && .venv/bin/pip install --quiet -r requirements.txt && "
    'jaxver=$(sed -n "s/^jax==//p" requirements.txt) && '
    '.venv/bin/pip install --quiet "jax[tpu]${jaxver:+==$jaxver}"'
)


def q(word):
    """The scripts' quoting: bare when safe, else single quotes with ' written as '\\''."""
    if re.fullmatch(r"[A-Za-z0-9_./:=@%+,-]+", word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def ssh_all(loc, command):
    return f"gcloud compute tpus tpu-vm ssh egoexo-v4 {loc} --worker=all --command {q(command)}"


def restart_loop(train, max_restarts=10):
    """The workers' loop: the training command again after exit status 75 (preempted, resumable)."""
    return (
        f"n=0; while :; do {train}; rc=$?; {{ [ $rc -eq 75 ] && [ $n -lt {max_restarts} ]; }} || exit $rc; "
        f'n=$((n + 1)); echo "# exit 75 (preempted, resumable): restart $n of {max_restarts}"; done'
    )


def test_tpu_dry_run_exact_copy_mode(sandbox):
    proc = run(
        TPU,
        *TPU_ARGS,
        "--project",
        "my-proj",
        "--create",
        "--dry-run",
        "--batch",
        "1024",
        "--dtype",
        "bfloat16",
        "--",
        "--config.num_epochs=100",
        env=sandbox["env"],
    )
    assert proc.returncode == 0, proc.stderr
    loc = "--zone=us-central2-b --project=my-proj"
    tarball = f"{sandbox['tmp']}/egoexo_jax-src.tar.gz"
    train = (
        "cd egoexo_jax && { "
        + restart_loop(
            ".venv/bin/python -m egoexo_jax.main --config=configs/k400_egoexo.py "
            "--workdir=gs://my-bucket/runs/k400 --config.batch_size=1024 "
            "--config.dtype=bfloat16 --config.num_epochs=100"
        )
        + "; }"
    )
    assert plus_lines(proc.stdout) == [
        f"gcloud compute tpus tpu-vm create egoexo-v4 {loc} --accelerator-type=v4-32 --version=tpu-ubuntu2204-base",
        f"tar -czf {q(tarball)} -C {q(str(REPO))} --exclude=./.git --exclude=./.venv --exclude=./workdirs "
        "--exclude=__pycache__ .",
        f"gcloud compute tpus tpu-vm scp {q(tarball)} egoexo-v4:egoexo_jax-src.tar.gz {loc} --worker=all",
        ssh_all(loc, "mkdir -p egoexo_jax && tar -xzf egoexo_jax-src.tar.gz -C egoexo_jax && rm egoexo_jax-src.tar.gz"),
        ssh_all(loc, INSTALL),
        ssh_all(loc, train),
    ]
    assert sandbox["calls"]() == []  # a dry run runs nothing, not even tar


def test_tpu_dry_run_git_mode_background_and_defaults(sandbox):
    proc = run(
        TPU,
        *TPU_ARGS,
        "--repo",
        "https://github.com/me/egoexo_jax.git",
        "--ref",
        "v1.0",
        "--accelerator",
        "v5p-64",
        "--background",
        "--dry-run",
        env=sandbox["env"],
    )
    assert proc.returncode == 0, proc.stderr
    loc = "--zone=us-central2-b"
    assert plus_lines(proc.stdout) == [  # no --create: the accelerator type is unused
        ssh_all(
            loc,
            "if [ -d egoexo_jax/.git ]; then git -C egoexo_jax fetch --quiet origin; "
            "else git clone --quiet https://github.com/me/egoexo_jax.git egoexo_jax; fi && "
            "git -C egoexo_jax checkout --quiet v1.0",
        ),
        ssh_all(loc, INSTALL),
        ssh_all(
            loc,
            "cd egoexo_jax && nohup bash -c "
            + q(
                restart_loop(
                    ".venv/bin/python -m egoexo_jax.main --config=configs/k400_egoexo.py "
                    "--workdir=gs://my-bucket/runs/k400 --config.batch_from_devices=True"
                )
            )
            + " > train.log 2>&1 < /dev/null &",
        ),
    ]  # no --batch: the recipe's clips per chip on every chip of the slice


def test_tpu_skip_setup_runs_only_training_on_all_workers(sandbox):
    proc = run(TPU, *TPU_ARGS, "--skip-setup", "--dry-run", "--", "--config.x=a b", env=sandbox["env"])
    assert proc.returncode == 0, proc.stderr
    assert plus_lines(proc.stdout) == [
        ssh_all(
            "--zone=us-central2-b",
            "cd egoexo_jax && { "
            + restart_loop(
                ".venv/bin/python -m egoexo_jax.main --config=configs/k400_egoexo.py "
                "--workdir=gs://my-bucket/runs/k400 --config.batch_from_devices=True '--config.x=a b'"
            )
            + "; }",
        )
    ]


def test_tpu_remote_commands_are_valid_bash(sandbox):
    for extra in ([], ["--repo", "git@host:me/r.git"], ["--background"]):
        proc = run(TPU, *TPU_ARGS, *extra, "--dry-run", "--", "--config.note=it's", env=sandbox["env"])
        for line in plus_lines(proc.stdout):
            words = shlex.split(line)
            assert words[0] in ("gcloud", "tar")
            if "--command" in words:
                assert "--worker=all" in words
                subprocess.run(["bash", "-n", "-c", words[words.index("--command") + 1]], check=True)


def test_tpu_real_run_calls_what_the_dry_run_prints(sandbox):
    args = [*TPU_ARGS, "--create", "--", "--config.x=a b"]
    dry = plus_lines(run(TPU, "--dry-run", *args, env=sandbox["env"]).stdout)
    proc = run(TPU, *args, env=sandbox["env"])
    assert proc.returncode == 0, proc.stderr
    assert plus_lines(proc.stdout) == dry
    calls = sandbox["calls"]()
    assert [[prog] + a for prog, _, _, a in calls] == [shlex.split(line) for line in dry]


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--tpu", "t", "--zone", "z", "--config", "c", "--workdir", "/local/dir"], "must be a gs:// path"),
        (["--tpu", "t", "--zone", "z", "--config", "c", "--workdir", "gs:/b"], "must be a gs:// path"),
        (["--tpu", "t", "--zone", "z", "--config", "c", "--workdir", "gs://"], "must be a gs:// path"),
        (["--tpu", "t", "--zone", "z", "--config", "c", "--workdir", "my-bucket/x"], "must be a gs:// path"),
        (TPU_ARGS[2:], "missing required argument(s): --tpu"),
        (["--tpu", "t"], "missing required argument(s): --zone --config --workdir"),
        (TPU_ARGS + ["--zone"], "--zone needs a value"),
        (TPU_ARGS + ["--worker=all"], "unknown argument '--worker=all'"),
        (TPU_ARGS + ["extra"], "unknown argument 'extra'"),
        (TPU_ARGS + ["--ref", "main"], "--ref needs --repo"),
        (TPU_ARGS + ["--base-lr", "1"], "unknown argument '--base-lr'"),
        (TPU_ARGS + ["--batch", "6x"], "--batch must be a positive"),
        (TPU_ARGS + ["--tpu", "Bad_Name"], "--tpu must be a TPU name"),
        (TPU_ARGS + ["--dtype", "half"], "--dtype must be bfloat16 or float32"),
    ],
)
def test_tpu_bad_arguments(sandbox, args, fragment):
    proc = run(TPU, *args, "--dry-run", env=sandbox["env"])
    assert_usage_error(proc, fragment)
    assert sandbox["calls"]() == []


# ----------------------------------------------------------------------------------- slurm.sbatch


def sbatch_headers():
    return dict(re.findall(r"^#SBATCH --([a-z-]+)=(\S+)$", SLURM.read_text(), flags=re.M))


def test_slurm_headers_one_process_per_gpu():
    headers = sbatch_headers()
    assert {"nodes", "gpus-per-node", "ntasks-per-node", "time"} <= set(headers)
    assert headers["ntasks-per-node"] == headers["gpus-per-node"]


def test_slurm_dry_run_outside_a_job_uses_the_headers(sandbox):
    headers = sbatch_headers()
    proc = run(
        SLURM,
        "--dry-run",
        "--config",
        "configs/k400_egoexo.py",
        "--workdir",
        "/shared/k400",
        "--batch",
        "512",
        "--dtype",
        "bfloat16",
        "--",
        "--config.num_epochs=100",
        env=sandbox["env"],
        via_bash=True,
    )
    assert proc.returncode == 0, proc.stderr
    n, g, c = headers["nodes"], headers["gpus-per-node"], headers["cpus-per-task"]
    assert proc.stdout.splitlines() == [
        f"# {n} node(s) x {g} GPU(s) = {int(n) * int(g)} processes, one per GPU",
        f"+ cd {q(str(REPO))}",
        "+ export 'JAX_COORDINATOR_ADDRESS=<first node of SLURM_JOB_NODELIST>:<61440 + SLURM_JOB_ID % 4096>'",
        f"+ srun --nodes={n} --ntasks-per-node={g} --gpu-bind=none --kill-on-bad-exit=1 --cpus-per-task={c} "
        "python -m egoexo_jax.main --config=configs/k400_egoexo.py --workdir=/shared/k400 "
        "--config.batch_size=512 --config.dtype=bfloat16 --config.num_epochs=100",
    ]
    assert sandbox["calls"]() == []


def test_slurm_dry_run_allocation_flags_and_env_arguments(sandbox):
    proc = run(
        SLURM,
        "--dry-run",
        "--nodes",
        "4",
        "--gpus-per-node=2",
        env=sandbox["env"],
        via_bash=True,
        extra_env={
            "CONFIG": "configs/epic100.py",
            "WORKDIR": "/shared/epic",
            "EXTRA_ARGS": "--config.a=1  --config.b=2",
            "JAX_COORDINATOR_PORT": "12345",
            "PYTHON": ".venv/bin/python",
            "REPO_DIR": "/src/egoexo",
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert plus_lines(proc.stdout) == [
        "cd /src/egoexo",
        "export 'JAX_COORDINATOR_ADDRESS=<first node of SLURM_JOB_NODELIST>:12345'",
        "srun --nodes=4 --ntasks-per-node=2 --gpu-bind=none --kill-on-bad-exit=1 --cpus-per-task=8 "
        ".venv/bin/python -m egoexo_jax.main --config=configs/epic100.py --workdir=/shared/epic "
        "--config.batch_from_devices=True --config.a=1 --config.b=2",
    ]
    assert "# 4 node(s) x 2 GPU(s) = 8 processes, one per GPU" in proc.stdout


def job_env(sandbox, **overrides):
    env = {
        "SLURM_JOB_ID": "12345",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_GPUS_ON_NODE": "4",
        "SLURM_NTASKS_PER_NODE": "4",
        "SLURM_CPUS_PER_TASK": "16",
        "SLURM_JOB_NODELIST": "gpu[007-008]",
        "SLURM_SUBMIT_DIR": str(sandbox["path"]),
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


@pytest.mark.parametrize(
    "nodelist,first",
    [
        ("node001", "node001"),
        ("node001,host2", "node001"),
        ("node[001-015],host2", "node001"),
        ("node[001,007-015],host2", "node001"),
        ("gpu[7,9]", "gpu7"),
    ],
)
def test_slurm_dry_run_inside_a_job(sandbox, nodelist, first):
    proc = run(
        SLURM,
        "--dry-run",
        *SLURM_ARGS,
        env=sandbox["env"],
        via_bash=True,
        extra_env=job_env(sandbox, SLURM_JOB_NODELIST=nodelist),
    )
    assert proc.returncode == 0, proc.stderr
    assert plus_lines(proc.stdout) == [  # port: 61440 + 12345 % 4096, what jax itself would pick
        f"cd {q(str(sandbox['path']))}",
        f"export JAX_COORDINATOR_ADDRESS={first}:61497",
        "srun --nodes=2 --ntasks-per-node=4 --gpu-bind=none --kill-on-bad-exit=1 --cpus-per-task=16 "
        "python -m egoexo_jax.main --config=c.py --workdir=/w --config.batch_from_devices=True",
    ]
    assert sandbox["calls"]() == []


def test_slurm_real_run_inside_a_job(sandbox):
    proc = run(
        SLURM,
        *SLURM_ARGS,
        "--",
        "--config.x=a b",
        env=sandbox["env"],
        via_bash=True,
        extra_env=job_env(sandbox, SLURM_GPUS_ON_NODE=None, SLURM_GPUS_PER_NODE="a100:4", PYTHON="fakepython"),
    )
    assert proc.returncode == 0, proc.stderr
    [(prog, cwd, coordinator, args)] = sandbox["calls"]()
    assert (prog, cwd, coordinator) == ("srun", str(sandbox["path"]), "gpu007:61497")
    assert args == [
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpu-bind=none",
        "--kill-on-bad-exit=1",
        "--cpus-per-task=16",
        "fakepython",
        "-m",
        "egoexo_jax.main",
        "--config=c.py",
        "--workdir=/w",
        "--config.batch_from_devices=True",
        "--config.x=a b",
    ]


@pytest.mark.parametrize(
    "args,extra_env,fragment",
    [
        (["--config", "c", "--workdir", "w"], {}, "not inside a SLURM job"),
        (["--dry-run", "--workdir", "w"], {}, "missing required argument(s): --config"),
        (["--dry-run"], {}, "missing required argument(s): --config --workdir"),
        (["--dry-run", "--config", "c", "--workdir", "w", "--gpus", "8"], {}, "unknown argument '--gpus'"),
        (["--dry-run", "--config", "c", "--workdir", "w", "--nodes", "0"], {}, "--nodes must be a positive integer"),
        (["--dry-run", "--config", "c", "--workdir", "w", "--base-lr", "1"], {}, "unknown argument '--base-lr'"),
        (["--dry-run", "--config", "c", "--workdir", "w", "--batch", "0"], {}, "--batch must be a positive integer"),
        (["--dry-run", "--config", "c", "--workdir"], {}, "--workdir needs a value"),
        (
            ["--config", "c", "--workdir", "w"],
            "job:SLURM_NTASKS_PER_NODE=1",
            "--ntasks-per-node (1) must equal the GPUs per node (4)",
        ),
        (["--config", "c", "--workdir", "w"], "job:SLURM_GPUS_ON_NODE=", "the job has no GPUs per node"),
        (["--config", "c", "--workdir", "w", "--nodes", "2"], "job:", "are for --dry-run outside a job"),
    ],
)
def test_slurm_bad_arguments(sandbox, args, extra_env, fragment):
    if isinstance(extra_env, str):  # "job:KEY=VALUE": inside a fake job with one variable changed
        key, _, value = extra_env[len("job:") :].partition("=")
        extra_env = job_env(sandbox, **({key: value} if key else {}))
    proc = run(SLURM, *args, env=sandbox["env"], via_bash=True, extra_env=extra_env)
    assert_usage_error(proc, fragment)
    assert sandbox["calls"]() == []


# ----------------------------------------------------------------------------------- preemption (exit 75)


def test_single_gpu_restarts_after_preemption_exit_status(sandbox):
    sandbox["exit_codes"](75, 75, 0)
    proc = run(SINGLE, *SINGLE_ARGS, env=sandbox["env"], extra_env={"PYTHON": "fakepython"})
    assert proc.returncode == 0, proc.stderr
    calls = sandbox["calls"]()
    assert len(calls) == 3 and len({tuple(c[3]) for c in calls}) == 1  # the same command each time
    assert "restart 2 of 10" in proc.stdout


@pytest.mark.parametrize(
    "codes,max_restarts,want_calls,want_rc",
    [
        ((75, 75, 75, 75), "2", 3, 75),  # gives up after --max-restarts
        ((2,), "10", 1, 2),  # a user error is not retried
        ((1,), "10", 1, 1),  # nor a crash
    ],
)
def test_single_gpu_restart_limits(sandbox, codes, max_restarts, want_calls, want_rc):
    sandbox["exit_codes"](*codes)
    proc = run(
        SINGLE, *SINGLE_ARGS, "--max-restarts", max_restarts, env=sandbox["env"], extra_env={"PYTHON": "fakepython"}
    )
    assert proc.returncode == want_rc
    assert len(sandbox["calls"]()) == want_calls


def test_single_gpu_sigterm_to_the_launcher_stops_without_restart(sandbox):
    """SIGTERM to the launcher reaches training (which saves and exits 75); nothing restarts."""
    fake = sandbox["path"] / "bin" / "slowpython"
    started = sandbox["path"] / "started"
    # ready for SIGTERM before it says it started; on it, stop the sleep (which holds the pipes)
    fake.write_text(
        "#!/usr/bin/env bash\ntrap 'kill $!; exit 75' TERM\nsleep 30 &\n"
        f"echo run >> {shlex.quote(str(started))}\nwait\n"
    )
    fake.chmod(0o755)
    proc = subprocess.Popen(
        [str(SINGLE), *SINGLE_ARGS],
        env=dict(sandbox["env"], PYTHON="slowpython"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 30
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 75
    assert started.read_text() == "run\n" and "restart" not in out


def test_slurm_requeues_the_job_on_preemption_exit_status(sandbox):
    sandbox["exit_codes"](75)  # srun: the training processes stopped on SIGTERM, checkpoint saved
    proc = run(
        SLURM,
        *SLURM_ARGS,
        env=sandbox["env"],
        via_bash=True,
        extra_env=job_env(sandbox, PYTHON="fakepython"),
    )
    assert proc.returncode == 0, proc.stderr
    assert [(c[0], c[3]) for c in sandbox["calls"]()][1:] == [("scontrol", ["requeue", "12345"])]
    assert "+ scontrol requeue 12345" in proc.stdout
    assert "--signal=TERM@" in SLURM.read_text() and "#SBATCH --requeue" in SLURM.read_text()


def test_slurm_passes_other_exit_statuses_through(sandbox):
    sandbox["exit_codes"](2)
    proc = run(
        SLURM,
        *SLURM_ARGS,
        env=sandbox["env"],
        via_bash=True,
        extra_env=job_env(sandbox, PYTHON="fakepython"),
    )
    assert proc.returncode == 2
    assert [c[0] for c in sandbox["calls"]()] == ["srun"]


def test_tpu_worker_loop_restarts_training_after_exit_75(sandbox):
    """Runs the command the workers get, with a fake .venv/bin/python that exits 75, 75, then 0."""
    proc = run(TPU, *TPU_ARGS, "--skip-setup", "--max-restarts", "3", "--dry-run", env=sandbox["env"])
    command = shlex.split(plus_lines(proc.stdout)[0])[-1]
    home = sandbox["path"] / "worker"
    python = home / "egoexo_jax" / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        FAKE.format(log=shlex.quote(str(home / "calls.log")), codes=shlex.quote(str(sandbox["path"] / "exit_codes")))
    )
    python.chmod(0o755)
    for codes, want_rc, want_calls in (((75, 75, 0), 0, 3), ((75, 75, 75, 75, 75), 75, 4)):
        sandbox["exit_codes"](*codes)
        (home / "calls.log").unlink(missing_ok=True)
        done = subprocess.run(
            ["bash", "-c", command], cwd=home, env=sandbox["env"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == want_rc, done.stderr
        assert (home / "calls.log").read_text().count("---\n") == want_calls


def test_slurm_copy_in_the_spool_folder_finds_the_shared_helpers(sandbox):
    """sbatch runs a copy of the script from its spool folder: the helpers come from the
    repository the job was submitted from."""
    spool = sandbox["path"] / "spool"
    spool.mkdir()
    copy = spool / "slurm_script"
    copy.write_text(SLURM.read_text())
    proc = run(
        copy,
        *SLURM_ARGS,
        env=sandbox["env"],
        via_bash=True,
        extra_env=job_env(sandbox, SLURM_SUBMIT_DIR=str(REPO), PYTHON="fakepython"),
    )
    assert proc.returncode == 0, proc.stderr
    assert [c[0] for c in sandbox["calls"]()] == ["srun"]
    proc = run(
        copy,
        *SLURM_ARGS,
        env=sandbox["env"],
        via_bash=True,
        extra_env=job_env(sandbox, PYTHON="fakepython"),
    )  # submitted from elsewhere
    assert proc.returncode == 2 and "launch/common.sh not found" in proc.stderr
