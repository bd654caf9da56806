"""Checkpoint restore on small trees: a damaged newest checkpoint is moved aside and the previous
one restored, a mismatching one is named, a full disk is one OSError naming the folder, and
metrics.jsonl drops the lines a restart repeats and sets aside unreadable ones."""

import errno
import glob
import json
import logging
import os

import jax
import numpy as np
import pytest

from egoexo_jax import cli, metric_log, storage
from egoexo_jax.checkpoint import config_json
from egoexo_jax.checkpoint import workdir as ckpt_lib
from egoexo_jax.models import presets


def _state(value):
    return {
        "step": np.int32(value),
        "params": {"w": np.full((4, 3), value, np.float32), "b": np.arange(3, dtype=np.float32) + value},
    }


def _meta(step):
    model = json.loads(config_json.model_config_to_json(presets.slowfast(18, width_per_group=8)))
    return {"data_iterator": {"batches": step}, "model_config": model}


@pytest.fixture
def workdir(tmp_path):
    """A workdir with checkpoints 1 and 2 of a small tree."""
    cp = ckpt_lib.Checkpointer(str(tmp_path), keep=3, async_save=False)
    for step in (1, 2):
        cp.save(step, _state(step), _meta(step))
    cp.close()
    return tmp_path


def _truncate_data(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True) if os.path.isfile(f)]
    for f in files:
        with open(f, "r+b") as handle:
            handle.truncate(os.path.getsize(f) // 2)


def _delete_manifest(step_dir):
    os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))


@pytest.mark.parametrize("damage", [_truncate_data, _delete_manifest])
def test_damaged_newest_is_moved_aside_and_the_previous_restored(workdir, damage, capsys):
    damage(os.path.join(workdir, "checkpoints", "2"))
    files_before = sorted(os.listdir(workdir / "checkpoints" / "2"))
    cp = ckpt_lib.Checkpointer(str(workdir), keep=3, async_save=False)
    checked = []
    step, state, meta = cp.restore_newest(_state(0), lambda s, m: checked.append(s))
    assert step == 1 and meta["data_iterator"]["batches"] == 1
    np.testing.assert_array_equal(state["params"]["w"], np.ones((4, 3), np.float32))
    assert checked == [1]  # the damaged one fails its digests before its meta is read
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"checkpoint {workdir / 'checkpoints' / '2'} cannot be read (")
    assert out[0].endswith(f"moved to {workdir / 'checkpoints_damaged' / '2'}, trying the previous one")
    assert cp.all_steps() == [1]
    assert sorted(os.listdir(workdir / "checkpoints_damaged" / "2")) == files_before  # moved, not deleted
    cp.save(2, _state(5), _meta(2))  # the step can be saved again
    assert cp.all_steps() == [1, 2]
    cp.close()


def test_all_damaged_restores_nothing_and_keeps_every_file(workdir, capsys):
    for step in ("1", "2"):
        _delete_manifest(os.path.join(workdir, "checkpoints", step))
    cp = ckpt_lib.Checkpointer(str(workdir), keep=3, async_save=False)
    assert cp.restore_newest(_state(0), lambda s, m: None) is None
    cp.close()
    assert sorted(os.listdir(workdir / "checkpoints_damaged")) == ["1", "2"]
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_a_mismatch_is_named_and_nothing_is_moved(workdir):
    cp = ckpt_lib.Checkpointer(str(workdir), keep=3, async_save=False)
    other = _state(0)
    other["params"]["w"] = np.zeros((4, 5), np.float32)
    with pytest.raises(ckpt_lib.CheckpointMismatchError) as e:
        cp.restore_newest(other, lambda s, m: None)
    assert "['params']['w'] is (4, 3) float32 there; expected (4, 5) float32" in str(e.value)
    assert isinstance(e.value, cli.UserError)

    def refuse(step, meta):
        raise ckpt_lib.CheckpointMismatchError(f"config.seed differs from checkpoint {step}")

    with pytest.raises(ckpt_lib.CheckpointMismatchError, match="checkpoint 2"):
        cp.restore_newest(_state(0), refuse)
    assert cp.all_steps() == [1, 2] and not (workdir / "checkpoints_damaged").exists()
    cp.close()


def test_read_only_loaders_skip_a_damaged_newest_without_moving_it(workdir, capsys, caplog):
    _truncate_data(os.path.join(workdir, "checkpoints", "2"))
    with caplog.at_level(logging.WARNING):
        cfg, variables, step = ckpt_lib.load_workdir_variables(str(workdir))
    assert step == 1 and cfg.width_per_group == 8
    np.testing.assert_array_equal(variables["params"]["b"], np.arange(3, dtype=np.float32) + 1)
    assert "cannot be read" in capsys.readouterr().out and (workdir / "checkpoints" / "2").is_dir()
    assert not any("Metadata file does not exist" in r.getMessage() for r in caplog.records)


def test_a_save_the_disk_cannot_hold_is_refused_with_the_folder(workdir, monkeypatch):
    cp = ckpt_lib.Checkpointer(str(workdir), keep=3, async_save=False)
    need = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(workdir / "checkpoints" / "2") for f in fs)
    monkeypatch.setattr(ckpt_lib.storage, "free_bytes", lambda path: need - 1)
    with pytest.raises(OSError) as e:
        cp.save(3, _state(3), _meta(3))
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(workdir / "checkpoints")
    assert cli.message(e.value).startswith("No space left on device (a checkpoint needs about")
    assert cp.all_steps() == [1, 2]
    cp.close()


def test_orbax_disk_failures_become_the_os_error():
    text = (
        'RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database: Failed writing: '
        "\"/runs/wd/checkpoints/3.orbax-checkpoint-tmp/d/abc\": No space left on device [os_error_code='28']"
    )
    with pytest.raises(OSError) as e:
        with ckpt_lib._disk_errors("/runs/wd/checkpoints"):  # pylint: disable=protected-access
            raise ValueError(text)
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, "/runs/wd/checkpoints/3.orbax-checkpoint-tmp/d/abc")
    with pytest.raises(OSError) as e:
        with ckpt_lib._disk_errors("/runs/wd/checkpoints"):  # pylint: disable=protected-access
            raise OSError(errno.ENOSPC, "No space left on device")
    assert e.value.filename == "/runs/wd/checkpoints"
    with pytest.raises(KeyError):  # anything else passes through untouched
        with ckpt_lib._disk_errors("/x"):  # pylint: disable=protected-access
            raise KeyError("a bug")


def test_metrics_lines_after_the_restored_step_are_dropped(tmp_path):
    if jax.process_index() != 0:
        pytest.skip("only process 0 writes metrics.jsonl")
    logger = metric_log.MetricLogger(str(tmp_path))
    for step in (1, 2, 3):
        logger.write(step, {"loss": float(step)})
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 4, "lo')  # torn by a kill
    logger.truncate_after(2)
    assert [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")] == [1, 2]
    logger.truncate_after(0)  # a start without a checkpoint keeps nothing
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    logger.close()


def test_a_full_disk_under_metrics_jsonl_names_the_file(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    logger = metric_log.MetricLogger(str(tmp_path))
    os.symlink("/dev/full", tmp_path / "metrics.jsonl")
    with pytest.raises(OSError) as e:
        logger.write(1, {"loss": 1.0})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "metrics.jsonl")
    logger.close()


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_an_unreadable_metrics_line_is_set_aside_and_the_later_lines_kept(where, tmp_path, request, capsys):
    if jax.process_index() != 0:
        pytest.skip("only process 0 writes metrics.jsonl")
    workdir = str(tmp_path) if where == "local" else request.getfixturevalue("bucket") + "/run"
    path = f"{workdir}/metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / s}).encode() + b"\n" for s in range(1, 11)]
    nul = b"\0" * 37 + b"\n"  # what a crash mid-write leaves on some file systems
    storage.write_bytes(path, b"".join(lines[:5]) + nul + b"".join(lines[5:]))
    logger = metric_log.MetricLogger(workdir)
    logger.truncate_after(8)
    assert [json.loads(line)["step"] for line in metric_log.read_lines(path)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert storage.read_bytes(path) == b"".join(lines[:8])
    side = f"{workdir}/metrics.jsonl.unreadable"
    assert storage.read_bytes(side) == nul
    assert capsys.readouterr().out.strip().splitlines() == [f"{path}: 1 unreadable line(s) set aside in {side}"]
    storage.write_bytes(path, storage.read_bytes(path) + b'{"step": 9, "lo\xff\n')  # another, not UTF-8
    logger.truncate_after(8)
    assert storage.read_bytes(side) == nul + b'{"step": 9, "lo\xff\n'  # added after the first
    logger.close()
