"""Checkpoint digests: every committed checkpoint (periodic, asynchronous or not, and best) holds
the sha256 of its files; 64 changed bytes in an array file make it damaged (set aside, the
previous one restored, one line), at restore, in the read-only loaders and at training start."""

import glob
import json
import logging
import os
import time
import types

import numpy as np
import pytest

from egoexo_jax import metric_log, storage, train_resume
from egoexo_jax.checkpoint import workdir as ckpt_lib


def _state(value):
    return {
        "step": np.int32(value),
        "params": {
            "w": np.full((4, 3), value, np.float32),
            "k": np.random.default_rng(value).random((64, 64), np.float32),
        },
        "batch_stats": {"m": np.full((3,), value, np.float32)},
        "opt_state": {"mu": np.full((4, 3), -value, np.float32)},
        "rng": np.array([0, value], np.uint32),
    }


def _meta(step, best_step=None):
    meta = {"data_iterator": {"batches": step}, "model_config": {"arch": "slowfast"}}
    if best_step is not None:
        meta["best"] = {"metric": "top1", "value": 50.0, "step": best_step}
    return meta


def _corrupt(step_dir):
    """Overwrites 64 bytes in the middle of the largest array data file of a checkpoint (same
    size; without digests orbax restores the changed values without complaint)."""
    files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_*", "d", "*"))
    target = max(files, key=os.path.getsize)
    size = os.path.getsize(target)
    assert size >= 64
    with open(target, "r+b") as f:
        f.seek((size - 64) // 2)
        f.write(os.urandom(64))
    return os.path.relpath(target, step_dir)


@pytest.fixture
def workdir(tmp_path):
    """A workdir with checkpoints 1 and 2 (saved asynchronously) and best states 1 and 2."""
    cp = ckpt_lib.Checkpointer(str(tmp_path), keep=3, async_save=True)
    best = ckpt_lib.BestCheckpoints(str(tmp_path))
    for step in (1, 2):
        cp.save(step, _state(step), _meta(step, best_step=step))
        best.save(step, _state(step), _meta(step, best_step=step))
    cp.close()
    best.close()
    return tmp_path


def test_a_clean_checkpoint_verifies_and_its_digests_list_every_file(workdir):
    for folder in ("checkpoints", "checkpoints_best"):
        for step in ("1", "2"):
            step_dir = os.path.join(workdir, folder, step)
            assert ckpt_lib.verify_digests(step_dir) is True
            listed = json.loads(open(os.path.join(step_dir, "digests.json"), encoding="utf-8").read())["files"]
            on_disk = {os.path.relpath(os.path.join(r, f), step_dir) for r, _, fs in os.walk(step_dir) for f in fs} - {
                "digests.json"
            }
            assert set(listed) == on_disk and any(name.startswith("state/") and "/d/" in name for name in listed)
    cp = ckpt_lib.Checkpointer(str(workdir), keep=3, async_save=False)
    step, state, _ = cp.restore_newest(_state(0), lambda s, m: None)
    assert step == 2 and not (workdir / "checkpoints_damaged").exists()
    np.testing.assert_array_equal(state["params"]["w"], np.full((4, 3), 2, np.float32))
    cp.close()


def test_an_async_save_gets_its_digests_once_committed_without_a_wait(tmp_path):
    cp = ckpt_lib.Checkpointer(str(tmp_path), keep=3, async_save=True)
    cp.save(5, _state(5), _meta(5))
    path = tmp_path / "checkpoints" / "5" / "digests.json"
    deadline = time.time() + 20
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists()
    assert ckpt_lib.verify_digests(str(tmp_path / "checkpoints" / "5"))
    cp.close()


def test_64_changed_bytes_in_the_newest_are_found_and_the_previous_restored(workdir, capsys):
    changed = _corrupt(os.path.join(workdir, "checkpoints", "2"))
    cp = ckpt_lib.Checkpointer(str(workdir), keep=3, async_save=False)
    with pytest.raises(ckpt_lib.DamagedCheckpointError, match=f"{changed} has sha256 "):
        cp.restore(_state(0), 2)
    step, state, meta = cp.restore_newest(_state(0), lambda s, m: None)
    assert step == 1 and meta["data_iterator"]["batches"] == 1
    np.testing.assert_array_equal(state["params"]["w"], np.ones((4, 3), np.float32))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"checkpoint {workdir / 'checkpoints' / '2'} cannot be read ({changed}")
    assert out[0].endswith(f"moved to {workdir / 'checkpoints_damaged' / '2'}, trying the previous one")
    assert cp.all_steps() == [1]
    cp.close()


def test_a_checkpoint_without_digests_is_restored_with_a_warning(workdir, caplog):
    os.remove(os.path.join(workdir, "checkpoints", "2", "digests.json"))
    cp = ckpt_lib.Checkpointer(str(workdir), keep=3, async_save=False)
    with caplog.at_level(logging.WARNING):
        step, _, _ = cp.restore_newest(_state(0), lambda s, m: None)
    assert step == 2
    assert any("has no digests.json" in r.getMessage() and "/checkpoints/2" in r.getMessage() for r in caplog.records)
    cp.close()


def test_a_damaged_best_is_skipped_by_the_loaders(workdir, capsys):
    changed = _corrupt(os.path.join(workdir, "checkpoints_best", "2"))
    _, variables, step = ckpt_lib.load_workdir_variables(str(workdir), best=True)
    assert step == 1
    np.testing.assert_array_equal(variables["params"]["w"], np.ones((4, 3), np.float32))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(
        f"checkpoint {workdir / 'checkpoints_best' / '2'} cannot be read ({changed}"
    )
    assert (workdir / "checkpoints_best" / "2").is_dir()  # a reader leaves it in place


def test_training_start_sets_a_damaged_best_aside_and_goes_on(workdir, monkeypatch, capsys):
    _corrupt(os.path.join(workdir, "checkpoints_best", "2"))
    monkeypatch.setattr(train_resume, "abstract_state", lambda config, run: _state(0))
    monkeypatch.setattr(train_resume, "check_resumable", lambda *args: None)
    positions = []
    run = types.SimpleNamespace(train_iter=types.SimpleNamespace(set_state=positions.append), workdir=str(workdir))
    cp = ckpt_lib.Checkpointer(str(workdir), keep=3, async_save=False)
    best = ckpt_lib.BestCheckpoints(str(workdir))
    logger = metric_log.MetricLogger(str(workdir))
    state, _, _, best_state = train_resume.start(None, run, cp, logger, best)
    assert int(state.step) == 2 and positions == [{"batches": 2}]
    assert best_state is None  # the tracked best (step 2) is gone: the next validation starts over
    assert best.steps() == [1] and (workdir / "checkpoints_damaged" / "best-2").is_dir()
    out = [line for line in capsys.readouterr().out.splitlines() if "best checkpoint" in line]
    assert len(out) == 1 and out[0].startswith(f"best checkpoint {workdir / 'checkpoints_best' / '2'} cannot be read (")
    assert out[0].endswith(f"moved to {workdir / 'checkpoints_damaged' / 'best-2'}")
    for closing in (cp, best, logger):
        closing.close()


def test_digests_on_gcs_find_64_changed_bytes(bucket, capsys):
    workdir = f"{bucket}/run"
    cp = ckpt_lib.Checkpointer(workdir, keep=3, async_save=True)
    for step in (1, 2):
        cp.save(step, _state(step), _meta(step))
    cp.close()
    step_dir = f"{workdir}/checkpoints/2"
    assert ckpt_lib.verify_digests(step_dir)
    listed = json.loads(storage.read_bytes(f"{step_dir}/digests.json"))["files"]
    name = max((n for n in listed if n.startswith("state/ocdbt.process_")), key=lambda n: listed[n]["size"])
    data = bytearray(storage.read_bytes(f"{step_dir}/{name}"))
    middle = (len(data) - 64) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    storage.write_bytes(f"{step_dir}/{name}", bytes(data))
    cp = ckpt_lib.Checkpointer(workdir, keep=3, async_save=False)
    step, _, _ = cp.restore_newest(_state(0), lambda s, m: None)
    assert step == 1 and storage.isdir(f"{workdir}/checkpoints_damaged/2")
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and f"({name} has sha256 " in out[0]
    cp.close()
