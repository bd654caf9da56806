"""egoexo_jax/atomic_write.py: the one atomic-write helper (teacher files, precompute parts)."""

import os

import pytest

from egoexo_jax.atomic_write import atomic_write


def test_writes_creates_folders_and_replaces(tmp_path):
    path = tmp_path / "new" / "folder" / "file.bin"
    atomic_write(path, lambda f: f.write(b"first"))
    assert path.read_bytes() == b"first"
    atomic_write(str(path), lambda f: f.write(b"second"))
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["file.bin"]  # no temporary file left behind


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def half_then_fail(f):
        f.write(b"half")
        raise KeyboardInterrupt  # not only Exception: an interrupted run must not leave junk

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]
