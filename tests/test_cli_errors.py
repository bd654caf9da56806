"""One error style for user mistakes in every entry point: ``error: ...`` on stderr, exit 2, no
traceback (``--debug`` adds it); bugs keep their traceback. Config validation happens before
anything is built."""

import errno
import os
import pathlib
import subprocess
import sys

import pytest

from egoexo_jax import cli, config_schema
from egoexo_jax import main as main_lib
from egoexo_jax.data import sources
from egoexo_jax.data.config import default_data_config
from egoexo_jax.data.errors import AnnotationError

import fake_media
import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinetics")
    fake_media.write_kinetics_dataset(root, [20] * tiny_config.NUM_CLASSES, height=48, width=64)
    return root


def _main(tmp_path, *args, config=None):
    config = config or f"{REPO}/tests/tiny_config.py:{tmp_path}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "egoexo_jax.main", f"--config={config}", f"--workdir={tmp_path / 'wd'}", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_line(proc):
    """The stderr's last line, after checking the run ended as a user error without a traceback."""
    assert proc.returncode == cli.EXIT_USER_ERROR, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-3000:]
    return last


# ----------------------------------------------------------------------------------------------
# Config validation (in process).


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("optimizer.base_lr", -0.1, "config.optimizer.base_lr=-0.1; expected a finite number > 0"),
        ("optimizer.base_lr", 0.0, "config.optimizer.base_lr=0.0; expected a finite number > 0"),
        ("num_epochs", -1.0, "config.num_epochs=-1.0; expected a finite number > 0"),
        ("total_steps", -5, "config.total_steps=-5; expected an integer >= 0"),
        ("optimizer.weight_decay", -1e-4, "config.optimizer.weight_decay=-0.0001"),
        ("optimizer.momentum", 1.0, "config.optimizer.momentum=1.0; expected a finite number in [0, 1)"),
        ("loss.ce", float("nan"), "config.loss.ce=nan"),
        ("loss.ego", -0.5, "config.loss.ego=-0.5; expected a finite number >= 0"),
        ("loss.ego_temperature", 0.0, "config.loss.ego_temperature=0.0; expected a finite number > 0"),
        ("data.train_crop_size", 0, "config.data.train_crop_size=0; expected an integer >= 1"),
        ("data.train_crop_size", 96, "config.data.train_crop_size=96 is larger than the smallest training scale"),
        ("data.flip_prob", 1.5, "config.data.flip_prob=1.5; expected a finite number in [0, 1]"),
        ("schedule.lrs", (1.0, -0.1), "config.schedule.lrs[1]=-0.1"),
        ("checkpoint.keep", 0, "config.checkpoint.keep=0; expected an integer >= 1"),
    ],
)
def test_out_of_range_values_name_the_key(key, value, words):
    c = tiny_config.get_config("")
    parent, _, leaf = key.rpartition(".")
    node = c[parent] if parent else c
    if key == "schedule.lrs":
        c.schedule.steps = (0, 2)
    node[leaf] = value
    with pytest.raises(config_schema.ConfigError) as e:
        config_schema.validate(c)
    assert words in str(e.value)
    assert isinstance(e.value, cli.UserError) and isinstance(e.value, ValueError)


def test_every_recipe_default_is_in_range():
    config_schema.validate(config_schema.base_config(), num_devices=8)
    config_schema.validate(tiny_config.get_config(""), num_devices=8)


@pytest.mark.parametrize(
    "batch,group,devices,words",
    [
        (6, 4, 8, "config.batch_size=6 does not split over the 8 devices; expected a multiple of 8"),
        (8, 3, 8, "does not split into BatchNorm groups of config.model.bn_group_size=3 clips"),
        (8, 4, 8, None),  # two groups of 4 over 8 devices: fine
        (8, 16, 8, None),  # a batch smaller than the group is one group
        (16, 4, 3, "config.batch_size=16 does not split over the 3 devices"),
    ],
)
def test_batch_layout_is_checked_up_front(batch, group, devices, words):
    c = tiny_config.get_config("")
    c.batch_size, c.eval_batch_size, c.model.bn_group_size = batch, 8 if devices == 8 else 3, group
    if words is None:
        config_schema.validate(c, num_devices=devices)
        return
    with pytest.raises(config_schema.ConfigError, match=words):
        config_schema.validate(c, num_devices=devices)


def test_non_utf8_list_names_file_and_line(tmp_path, kin_root):
    root = tmp_path / "data"
    root.mkdir()
    lines = (kin_root / "train.csv").read_bytes()
    (root / "train.csv").write_bytes(lines + b"caf\xe9.mp4 0\n")
    cfg = default_data_config("kinetics")
    cfg.path_to_data_dir = cfg.path_prefix = str(root)
    with pytest.raises(AnnotationError) as e:
        sources.build_source(cfg, "train")
    line = tiny_config.NUM_CLASSES + 1
    assert str(e.value).startswith(f"{root / 'train.csv'}:{line}: byte 0xe9 at column 4 is not UTF-8")
    cfg.path_to_data_dir = str(tmp_path / "nowhere")
    with pytest.raises(cli.MissingFileError, match="config.data.path_to_data_dir="):
        sources.build_source(cfg, "train")


def test_report_formats_disk_errors_with_their_path(capsys):
    full = OSError(errno.ENOSPC, "No space left on device")  # what a write() on a full disk raises
    wrapped = ValueError("orbax: save failed")
    wrapped.__cause__ = full
    assert cli.handles(wrapped) and not cli.handles(ValueError("a bug"))
    assert cli.report(wrapped, where="/runs/wd") == 2
    assert capsys.readouterr().err == ("error: No space left on device, /runs/wd, expected free space on the device\n")
    assert cli.report(cli.Preempted("SIGTERM at step 3")) == cli.EXIT_PREEMPTED


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(config, workdir):
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(main_lib, "_run", broken)
    with pytest.raises(RuntimeError, match="an internal bug"):
        main_lib.main(["main"])


# ----------------------------------------------------------------------------------------------
# Through egoexo_jax.main (exit status and stderr are the behaviour under test).


@pytest.mark.slow
def test_main_config_errors_are_one_line(tmp_path, kin_root):
    proc = _main(tmp_path, config=str(tmp_path / "missing_recipe.py"))
    assert _error_line(proc) == (
        f"error: config file not found, --config={tmp_path / 'missing_recipe.py'}, "
        "expected a recipe file such as configs/pretrain.py[:variant]"
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _main(tmp_path, "--config.optimizer.base_lr=-0.1", config=f"{REPO}/tests/tiny_config.py:{kin_root}")
    assert _error_line(proc) == "error: config.optimizer.base_lr=-0.1; expected a finite number > 0"
    assert not (tmp_path / "wd").exists()  # refused before anything was written
    proc = _main(tmp_path, "--config.batch_size=abc", config=f"{REPO}/tests/tiny_config.py:{kin_root}")
    assert "--config.batch_size=abc" in _error_line(proc)
    # Values that used to train with zero gradients or end in a traceback (issue 24).
    for override, line in (
        ("--config.model.dropout_rate=2.0", "error: config.model.dropout_rate=2.0; expected a finite number in [0, 1)"),
        ("--config.seed=-1", "error: config.seed=-1; expected an integer in [0, 4294967296)"),
    ):
        proc = _main(tmp_path, override, config=f"{REPO}/tests/tiny_config.py:{kin_root}")
        assert proc.returncode == 2 and _error_line(proc) == line
        assert not (tmp_path / "wd").exists()


@pytest.mark.slow
def test_main_data_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, kin_root):
    data = tmp_path / "data"
    data.mkdir()
    for f in kin_root.iterdir():
        (data / f.name).symlink_to(f)
    (data / "train.csv").unlink()
    (data / "train.csv").write_text((kin_root / "train.csv").read_text() + "v0.mp4 not_a_label\n")
    proc = _main(tmp_path, config=f"{REPO}/tests/tiny_config.py:{data}")
    want = f"error: {data / 'train.csv'}:{tiny_config.NUM_CLASSES + 1}: label 'not_a_label' is not an integer"
    assert _error_line(proc) == want
    proc = _main(tmp_path, "--debug", config=f"{REPO}/tests/tiny_config.py:{data}")
    assert proc.returncode == 2 and "Traceback" in proc.stderr and proc.stderr.strip().endswith(want[len("error: ") :])
