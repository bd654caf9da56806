"""One writer per workdir: a second run is refused with a message naming the holder, a dead
holder's lock is taken over (local: flock, freed by the kernel; gs://: a heartbeat gone stale),
and release removes the lock."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from egoexo_jax import cli, storage
from egoexo_jax.storage import lock as lock_lib

_HOLD = textwrap.dedent(
    """
    import sys, time
    from egoexo_jax import storage
    lock = storage.WorkdirLock(sys.argv[1], process_index=0).acquire()
    print("held", flush=True)
    time.sleep(600)
    """
)


def _holder(workdir):
    """A python subprocess that takes the lock of ``workdir`` and sleeps; returned once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, workdir], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_naming_the_holder_and_a_killed_holders_lock_is_taken_over(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    proc = _holder(workdir)
    try:
        with pytest.raises(lock_lib.WorkdirLockedError) as e:
            storage.WorkdirLock(workdir, process_index=0).acquire()
        message = str(e.value)
        assert isinstance(e.value, cli.UserError)
        assert message.startswith(f"{workdir}/workdir.lock is held by pid {proc.pid} on host ")
        assert f"(command: {os.path.basename(sys.executable)} -c {workdir}); expected" in message
        assert message.endswith("expected one run per workdir (stop it, or remove the lock if that run is gone)")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with storage.WorkdirLock(workdir, process_index=0) as held:  # the kernel freed the flock
        assert held.held
        info = json.loads(open(os.path.join(workdir, "workdir.lock"), encoding="utf-8").read())
        assert info["pid"] == os.getpid()
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1 and f"taking over the lock of pid {proc.pid} on host" in out[0]
    assert not os.path.exists(os.path.join(workdir, "workdir.lock"))  # released: removed
    with storage.WorkdirLock(workdir, process_index=0):  # a clean release leaves nothing to take over
        assert capsys.readouterr().out == ""


def test_only_process_0_locks(tmp_path):
    with storage.WorkdirLock(str(tmp_path), process_index=0):
        with storage.WorkdirLock(str(tmp_path), process_index=1) as other:
            assert not other.held
        with pytest.raises(lock_lib.WorkdirLockedError):
            storage.WorkdirLock(str(tmp_path), process_index=0).acquire()


def test_gcs_lock_refuses_a_second_run_takes_over_a_stale_heartbeat_and_release_deletes(gcs, bucket, capsys):
    workdir = f"{bucket}/run"
    first = storage.WorkdirLock(workdir, heartbeat_s=0.2, stale_after_s=5, process_index=0).acquire()
    assert gcs.objects(bucket) == ["run/workdir.lock"]
    before = json.loads(storage.read_bytes(f"{workdir}/workdir.lock"))
    time.sleep(0.6)  # the heartbeat rewrites the object
    assert json.loads(storage.read_bytes(f"{workdir}/workdir.lock"))["heartbeat"] > before["heartbeat"]
    with pytest.raises(lock_lib.WorkdirLockedError) as e:
        storage.WorkdirLock(workdir, process_index=0).acquire()
    assert str(e.value).startswith(f"{workdir}/workdir.lock is held by pid {os.getpid()} on host ")
    first.release()
    assert gcs.objects(bucket) == []

    # A run that died: its record stays, its heartbeat gets older than stale_after_s.
    dead = dict(before, pid=999999, host="another-host", heartbeat=time.time() - 30)
    storage.write_bytes(f"{workdir}/workdir.lock", json.dumps(dead).encode())
    with pytest.raises(lock_lib.WorkdirLockedError, match="pid 999999"):
        storage.WorkdirLock(workdir, stale_after_s=60, process_index=0).acquire()
    capsys.readouterr()
    with storage.WorkdirLock(workdir, stale_after_s=10, process_index=0):
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1 and "taking over the lock of pid 999999" in out[0] and "no heartbeat for 30 s" in out[0]
        assert json.loads(storage.read_bytes(f"{workdir}/workdir.lock"))["pid"] == os.getpid()
    assert gcs.objects(bucket) == []


def test_gcs_lock_of_a_killed_process_on_this_host_is_taken_over_at_once(bucket, capsys):
    """A run killed by SIGKILL leaves its lock object with a fresh heartbeat; a restart on the same
    host sees that the pid is gone and goes on (another host would wait for the heartbeat)."""
    workdir = f"{bucket}/run"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, workdir], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(lock_lib.WorkdirLockedError, match=f"pid {proc.pid}"):
        storage.WorkdirLock(workdir, process_index=0).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    capsys.readouterr()
    with storage.WorkdirLock(workdir, process_index=0):
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1 and f"taking over the lock of pid {proc.pid}" in out[0] and "gone from this host" in out[0]
    assert not storage.exists(f"{workdir}/workdir.lock")


def test_gcs_release_leaves_a_lock_another_run_took_over(bucket):
    workdir = f"{bucket}/run"
    first = storage.WorkdirLock(workdir, heartbeat_s=3600, stale_after_s=0.1, process_index=0).acquire()
    time.sleep(0.3)
    second = storage.WorkdirLock(workdir, stale_after_s=0.1, process_index=0).acquire()
    first.release()  # not its lock any more: the object stays
    assert json.loads(storage.read_bytes(f"{workdir}/workdir.lock"))["token"] == second._info["token"]  # pylint: disable=protected-access
    second.release()
    assert not storage.exists(f"{workdir}/workdir.lock")
