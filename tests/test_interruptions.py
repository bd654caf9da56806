"""Training runs that are interrupted or restarted differently: kill -9 before the first checkpoint,
SIGTERM (exit 75), a config that no longer fits the checkpoint, mode=evaluate on a workdir, and the
per-epoch count of padded clips. (A whole run resuming past a damaged newest checkpoint:
test_storage_training.py, on the Cloud Storage server; the local fallback: test_checkpoint_restore.py.)"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from egoexo_jax import cli, evaluate, storage, train_loop, train_loop_utils, train_resume, train_setup
from egoexo_jax.checkpoint import workdir as ckpt_lib
from egoexo_jax.data.bad_inputs import read_bad_input_log
from egoexo_jax.models import presets

import fake_media
import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinetics")
    fake_media.write_kinetics_dataset(root, [40] * tiny_config.NUM_CLASSES, height=48, width=64)
    (root / "broken.mp4").write_bytes(b"not a video" * 20)
    with open(root / "test.csv", "a", encoding="utf-8") as f:
        f.write("broken.mp4 0\n")
    return str(root)


@pytest.fixture(scope="module")
def saved_workdir(kin_root, tmp_path_factory):
    """A workdir with a checkpoint at step 2 of the tiny config's train state (small random
    values in its shapes, the step counter 2: nothing is compiled)."""
    workdir = str(tmp_path_factory.mktemp("saved") / "wd")
    c = tiny_config.get_config(kin_root)
    run = train_setup.setup(c, workdir)
    abstract = train_resume.abstract_state(c, run)
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda s: (rng.normal(size=s.shape) * 0.01).astype(s.dtype), abstract)
    state["step"] = np.asarray(2, state["step"].dtype)
    cp = ckpt_lib.Checkpointer(workdir, async_save=False)
    cp.save(2, state, train_resume.checkpoint_meta(run, train_loop_utils.MetricAccumulator()))
    cp.close()
    run.train_iter.close()
    train_loop.write_config(c, workdir)
    return workdir


def _copy(workdir, tmp_path):
    target = str(tmp_path / "wd")
    shutil.copytree(workdir, target)
    return target


def _steps(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line)["step"] for line in f]


@pytest.mark.parametrize(
    "change,words",
    [
        (("model", "width_per_group", 16), "config.model.width_per_group=16 but checkpoint {ckpt} was saved with 8"),
        (("", "seed", 1), "config.seed=1 but checkpoint {ckpt} was saved with 0"),
        (("optimizer", "name", "adamw"), "checkpoint {ckpt} does not fit this config: ['opt_state']"),
    ],
)
def test_a_config_that_does_not_fit_the_checkpoint_is_named(saved_workdir, kin_root, tmp_path, change, words):
    workdir = _copy(saved_workdir, tmp_path)
    before = open(os.path.join(workdir, "config.json"), encoding="utf-8").read()
    c = tiny_config.get_config(kin_root)
    parent, key, value = change
    (c[parent] if parent else c)[key] = value
    with pytest.raises(ckpt_lib.CheckpointMismatchError) as e:
        train_loop.train_and_evaluate(c, workdir)
    assert words.format(ckpt=os.path.join(workdir, "checkpoints", "2")) in str(e.value)
    assert "\n" not in str(e.value) and isinstance(e.value, cli.UserError)
    assert open(os.path.join(workdir, "config.json"), encoding="utf-8").read() == before  # not overwritten
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]  # nothing moved


def test_init_from_of_another_architecture_is_a_user_error(saved_workdir, kin_root, tmp_path):
    c = tiny_config.get_config(kin_root)
    c.model = presets.slow(
        18, width_per_group=8, num_frames=8, crop_size=64, num_classes=(tiny_config.NUM_CLASSES,), bn_group_size=4
    )
    c.data.arch = "slow"
    c.init_from = saved_workdir
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match="holds a slowfast model but config.model.arch is slow"):
        train_loop.train_and_evaluate(c, str(tmp_path / "wd"))
    assert not os.path.exists(tmp_path / "wd" / "config.json")


def test_evaluate_mode_lists_bad_inputs_and_reports_the_checkpoint_step(saved_workdir, kin_root, tmp_path, capsys):
    c = tiny_config.get_config(kin_root)
    c.mode = "evaluate"
    c.evaluate.checkpoint = saved_workdir
    out = str(tmp_path / "eval")
    values = evaluate.evaluate_only(c, out)
    assert values["unscored_videos"] == 1.0
    assert sorted(os.listdir(os.path.join(out, "results"))) == ["test_step2.md", "test_step2_scores.npz"]
    assert "views, step 2" in capsys.readouterr().out
    assert [p.rsplit("/", 1)[-1] for p, _ in read_bad_input_log(os.path.join(out, "bad_inputs.txt"))] == ["broken.mp4"]


# ----------------------------------------------------------------------------------------------
# Whole training runs.


@pytest.mark.slow
def test_padded_clips_are_counted_per_epoch(kin_root, tmp_path, capsys):
    c = tiny_config.get_config(kin_root)
    c.num_epochs = 2.0
    c.data.sampling_rate = 6  # 8 frames every 6: 48 frames, more than the 40 each video has
    workdir = str(tmp_path / "wd")
    train_loop.train_and_evaluate(c, workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert [(r["step"], r["padded_clips_epoch"]) for r in records] == [(1, 8.0), (2, 8.0)]  # 1 step per epoch
    assert "epoch 1: 8 of 8 training clips ran past the end of their video" in capsys.readouterr().out


def _wait_for_steps(workdir, proc, n):
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if os.path.exists(path) and len(open(path, encoding="utf-8").read().splitlines()) >= n:
            return
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_before_the_first_checkpoint_leaves_consistent_metrics(kin_root, tmp_path):
    overrides = ("--config.num_epochs=5", "--config.checkpoint.every_steps=4")
    workdir = str(tmp_path / "wd")
    proc = subprocess.Popen(
        tiny_config.main_command(kin_root, workdir, *overrides),
        env=tiny_config.main_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_steps(workdir, proc, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and _steps(workdir)[:2] == [1, 2]
    assert not os.path.exists(os.path.join(workdir, "checkpoints", "4"))
    subprocess.run(
        tiny_config.main_command(kin_root, workdir, *overrides),
        env=tiny_config.main_env(),
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    assert _steps(workdir) == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_sigterm_saves_and_exits_75_then_resumes(kin_root, tmp_path):
    overrides = ("--config.num_epochs=8", "--config.checkpoint.every_steps=0")
    workdir = str(tmp_path / "wd")
    proc = subprocess.Popen(
        tiny_config.main_command(kin_root, workdir, *overrides),
        env=tiny_config.main_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_steps(workdir, proc, 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == cli.EXIT_PREEMPTED, err[-3000:]
    assert "preempted: SIGTERM at step" in err and "Traceback" not in err
    stopped = ckpt_lib.read_meta(workdir)[0]
    assert 2 <= stopped < 8
    done = subprocess.run(
        tiny_config.main_command(kin_root, workdir, *overrides),
        env=tiny_config.main_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and f"resumed from step {stopped}" in done.stdout
    assert _steps(workdir) == list(range(1, 9))
    np.testing.assert_equal(ckpt_lib.read_meta(workdir)[0], 8)


def _sigterm_then_wait(*unused, **unused_kw):
    """Stands in for a wait that would last (a stuck read, a long evaluation): SIGTERM to this
    process, then sleep far longer than any test may take."""
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(600)
    raise AssertionError("SIGTERM did not interrupt the wait")


def test_sigterm_during_the_final_test_exits_preempted_and_keeps_the_checkpoint(
    saved_workdir, kin_root, tmp_path, monkeypatch
):
    workdir = _copy(saved_workdir, tmp_path)
    c = tiny_config.get_config(kin_root)
    c.total_steps, c.test_at_end = 2, True  # the checkpoint is at step 2: straight to the final test
    monkeypatch.setattr(evaluate, "evaluate_final", _sigterm_then_wait)
    started = time.monotonic()
    with pytest.raises(cli.Preempted, match=r"SIGTERM during the final test after step 2; .*repeats the test"):
        train_loop.train_and_evaluate(c, workdir)
    assert time.monotonic() - started < 300 and ckpt_lib.read_meta(workdir)[0] == 2
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler of before is back


def test_sigterm_during_start_up_exits_preempted(saved_workdir, kin_root, tmp_path, monkeypatch):
    workdir = _copy(saved_workdir, tmp_path)
    monkeypatch.setattr(train_loop, "start", _sigterm_then_wait)
    with pytest.raises(cli.Preempted, match="SIGTERM during start-up"):
        train_loop.train_and_evaluate(tiny_config.get_config(kin_root), workdir)
    assert ckpt_lib.read_meta(workdir)[0] == 2


@pytest.mark.slow
def test_sigterm_while_a_read_is_blocked_and_during_validation_resumes_every_step_once(kin_root, tmp_path, monkeypatch):
    """A blocked read at step 3 and then a SIGTERM in the middle of validation each end the run with a
    checkpoint; the rerun after the second redoes that validation; the metrics hold every step and
    every validation once."""
    from egoexo_jax.data import train_pipeline  # pylint: disable=import-outside-toplevel

    c = tiny_config.get_config(kin_root)
    c.eval_every_epochs, c.checkpoint.every_steps = 1.0, 0
    workdir = str(tmp_path / "wd")
    real_next = train_pipeline.TrainIterator.__next__
    calls = {"n": 0}

    def next_blocking_at_the_third(self):
        calls["n"] += 1
        return _sigterm_then_wait() if calls["n"] == 3 else real_next(self)

    with monkeypatch.context() as m:
        m.setattr(train_pipeline.TrainIterator, "__next__", next_blocking_at_the_third)
        with pytest.raises(cli.Preempted, match="SIGTERM at step 2 of 4"):
            train_loop.train_and_evaluate(c, workdir)
    assert ckpt_lib.read_meta(workdir)[1]["data_iterator"]["batches"] == 2

    real_split = evaluate.evaluate_split
    with monkeypatch.context() as m:
        m.setattr(evaluate, "evaluate_split", _sigterm_then_wait)
        with pytest.raises(cli.Preempted, match=r"SIGTERM at step 3 of 4 \(validation is redone on resume\)"):
            train_loop.train_and_evaluate(c, workdir)
    step, meta = ckpt_lib.read_meta(workdir)
    assert (step, meta["pending"]) == (3, "eval")
    assert evaluate.evaluate_split is real_split
    train_loop.train_and_evaluate(c, workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in lines if "val/top1" in r] == [1, 2, 3, 4]


def test_sigterm_in_a_deferred_region_is_a_request_and_a_wait_cuts_it_short():
    from egoexo_jax.preemption import Interrupted, Preemption  # pylint: disable=import-outside-toplevel

    with Preemption() as preempt:
        with pytest.raises(cli.Preempted, match="start-up"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
    with Preemption(grace_s=600) as preempt:
        with preempt.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            assert preempt.requested
            with pytest.raises(Interrupted, match="SIGTERM during reading"):
                with preempt.interruptible("reading"):
                    time.sleep(60)
    watchdog = preempt._watchdog  # pylint: disable=protected-access
    watchdog.join(10)
    assert not watchdog.is_alive()  # the run is over: its watchdog must not end this process later


def test_a_stop_that_never_reaches_a_boundary_exits_75_after_the_grace_time():
    code = (
        "import os, signal, time\n"
        "from egoexo_jax.preemption import Preemption\n"
        "with Preemption(grace_s=0.5) as p, p.deferred():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(120)\n"
    )
    started = time.monotonic()
    proc = subprocess.run(
        [os.sys.executable, "-c", code], env=tiny_config.main_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == cli.EXIT_PREEMPTED, proc.stderr
    assert "no step boundary within 0.5 s" in proc.stderr and time.monotonic() - started < 60


def test_sigterm_before_the_loop_of_the_command_exits_75(kin_root, tmp_path):
    proc = subprocess.Popen(
        tiny_config.main_command(kin_root, str(tmp_path / "wd")),
        env=tiny_config.main_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = tmp_path / "wd" / "workdir.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the lock is taken before set-up: the loop is tens of seconds away
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_PREEMPTED, err[-3000:]
    assert "preempted: SIGTERM during start-up" in err and "Traceback" not in err


def test_a_second_run_on_a_workdir_in_use_is_refused_before_anything_is_built(saved_workdir, kin_root, tmp_path):
    from test_workdir_lock import _holder  # pylint: disable=import-outside-toplevel

    workdir = _copy(saved_workdir, tmp_path)
    proc = _holder(workdir)
    try:
        for run in (train_loop.train_and_evaluate, evaluate.evaluate_only):
            with pytest.raises(storage.WorkdirLockedError, match=f"held by pid {proc.pid} on host"):
                run(tiny_config.get_config(kin_root), workdir)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _steps(workdir) == [] if os.path.exists(os.path.join(workdir, "metrics.jsonl")) else True


@pytest.mark.parametrize("workdir,words", [("", "--workdir is empty; expected a directory"), ("FILE", "is a file")])
def test_a_workdir_that_is_empty_or_a_file_is_one_line(kin_root, tmp_path, workdir, words):
    if workdir == "FILE":
        workdir = str(tmp_path / "afile")
        pathlib.Path(workdir).write_text("x")
    with pytest.raises(cli.UserError, match=words):
        train_loop.train_and_evaluate(tiny_config.get_config(kin_root), workdir)
    assert not os.path.exists(os.path.join(os.getcwd(), "metrics.jsonl"))


@pytest.fixture
def small_tmpfs(tmp_path):
    """A mount point for a tmpfs of the test's options (needs root; skipped where mounting is not
    allowed), unmounted afterwards."""
    point = tmp_path / "mnt"
    point.mkdir()
    mounted = []

    def mount(options):
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for p in mounted:
        subprocess.run(["umount", "-l", str(p)], check=False)


@pytest.mark.parametrize("disk", ["read-only", "no-inodes"])
def test_an_existing_workdir_on_a_read_only_or_inode_less_disk_is_one_line(kin_root, small_tmpfs, disk):
    point = small_tmpfs("size=8m,nr_inodes=64" if disk == "read-only" else "size=8m,nr_inodes=3")
    (point / "wd").mkdir()
    (point / "wd" / "config.json").write_text("{}")  # a workdir of an earlier run
    if disk == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
    done = subprocess.run(
        tiny_config.main_command(kin_root, str(point / "wd")),
        env=tiny_config.main_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    expected = "Read-only file system" if disk == "read-only" else "No space left on device"
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == cli.EXIT_USER_ERROR and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert last.startswith(f"error: {expected}, {point}/wd") and last.endswith(
        "expected " + ("a writable file system" if disk == "read-only" else "free space on the device")
    )
