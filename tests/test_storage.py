"""egoexo_jax/storage: the path layer on local disk and on the local Cloud Storage server."""

import json
import multiprocessing
import os

import pytest

from egoexo_jax import storage
from egoexo_jax.data import bad_inputs
from egoexo_jax.metric_log import MetricLogger, read_lines
from egoexo_jax.storage import events

# ---------------------------------------------------------------------------------------------
# Path strings.


@pytest.mark.parametrize(
    "bad",
    ["s3://bucket/run", "gcs://bucket/run", "http://host/x", "gs:/bucket/run", "gs://B/upper-case", "gs:///x"],
)
def test_paths_the_layer_does_not_understand_are_one_line_errors(bad):
    with pytest.raises(storage.PathError, match=r"expected (a local path or )?gs://BUCKET/PATH") as info:
        storage.check(bad, "--workdir")
    assert "--workdir" in str(info.value) and "\n" not in str(info.value)


def test_urls_join_split_and_stay_urls():
    assert storage.check("gs://my-bucket/a/b") == "gs://my-bucket/a/b"
    assert storage.join("gs://b1x/run", "checkpoints", "2") == "gs://b1x/run/checkpoints/2"
    assert storage.absolute("gs://b1x/run/") == "gs://b1x/run"
    assert storage.absolute("rel/dir") == os.path.abspath("rel/dir")
    assert storage.dirname("gs://b1x/run/x.txt") == "gs://b1x/run" and storage.dirname("gs://b1x/x") == "gs://b1x"
    assert storage.basename("gs://b1x/run/x.txt") == "x.txt"
    assert storage.split_url("gs://b1x/run/x.txt") == ("b1x", "run/x.txt")


# ---------------------------------------------------------------------------------------------
# Atomic writes.


def test_writes_creates_folders_and_replaces(tmp_path):
    path = tmp_path / "new" / "folder" / "file.bin"
    storage.atomic_write(path, lambda f: f.write(b"first"))
    assert path.read_bytes() == b"first"
    storage.atomic_write(str(path), lambda f: f.write(b"second"))
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["file.bin"]  # no temporary file left behind


def _half_then_fail(f):
    f.write(b"half")
    raise KeyboardInterrupt  # not only Exception: an interrupted run must not leave junk


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        storage.atomic_write(path, _half_then_fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_an_object_is_written_whole_or_not_at_all(gcs, bucket):
    url = f"{bucket}/run/file.bin"
    storage.atomic_write(url, lambda f: f.write(b"old"))
    with pytest.raises(KeyboardInterrupt):
        storage.atomic_write(url, _half_then_fail)
    assert storage.read_bytes(url) == b"old"
    assert gcs.objects(bucket) == ["run/file.bin"]  # one object, no temporary


# ---------------------------------------------------------------------------------------------
# Objects: reading, listing, moving, errors.


def test_objects_read_list_copy_move_and_delete(gcs, bucket, tmp_path):
    storage.write_text(f"{bucket}/a/x.txt", "hi")
    storage.write_bytes(f"{bucket}/a/b/y.bin", b"0123456789")
    assert storage.listdir(f"{bucket}/a") == ["b", "x.txt"]
    assert storage.isdir(f"{bucket}/a/b") and not storage.isfile(f"{bucket}/a/b")
    assert storage.isfile(f"{bucket}/a/x.txt") and not storage.exists(f"{bucket}/nothing")
    assert storage.size(f"{bucket}/a/b/y.bin") == 10 and storage.tree_bytes(f"{bucket}/a") == 12
    assert storage.read_bytes(f"{bucket}/a/b/y.bin", start=2, end=5) == b"234"
    with storage.open_read(f"{bucket}/a/b/y.bin", block_size=4) as f:
        f.seek(7)
        assert f.read() == b"789"
    with storage.open_text(f"{bucket}/a/x.txt") as f:
        assert f.read() == "hi"
    got = storage.read_many([f"{bucket}/a/x.txt", f"{bucket}/missing", str(tmp_path / "missing")])
    assert got[0] == b"hi" and all(isinstance(g, FileNotFoundError) for g in got[1:])
    assert got[1].filename == f"{bucket}/missing"
    storage.move_tree(f"{bucket}/a", f"{bucket}/moved")
    assert gcs.objects(bucket) == ["moved/b/y.bin", "moved/x.txt"]
    storage.copy_tree(f"{bucket}/moved", str(tmp_path / "down"))
    assert (tmp_path / "down" / "b" / "y.bin").read_bytes() == b"0123456789"
    storage.copy_tree(str(tmp_path / "down"), f"{bucket}/up")
    assert storage.read_text(f"{bucket}/up/x.txt") == "hi"
    storage.remove_tree(f"{bucket}/moved")
    storage.remove(f"{bucket}/up/x.txt")
    assert gcs.objects(bucket) == ["up/b/y.bin"]
    assert storage.free_bytes(bucket) is None and storage.free_bytes(str(tmp_path)) > 0
    with pytest.raises(ValueError, match="cannot be appended"):
        storage.append_bytes(f"{bucket}/up/log.txt", b"line\n")


def test_a_missing_object_is_an_oserror_naming_the_url(bucket):
    with pytest.raises(FileNotFoundError) as info:
        storage.read_bytes(f"{bucket}/none.txt")
    assert info.value.filename == f"{bucket}/none.txt" and info.value.errno == 2
    with pytest.raises(FileNotFoundError) as info:
        storage.read_bytes("gs://no-such-bucket-here/x")
    assert info.value.filename == "gs://no-such-bucket-here/x"


def test_makedirs_creates_nothing_for_a_url(tmp_path, monkeypatch, bucket):
    monkeypatch.chdir(tmp_path)
    storage.makedirs(f"{bucket}/run/checkpoints")
    storage.write_text(f"{bucket}/run/config.json", "{}")
    assert os.listdir(tmp_path) == []  # never a local folder named gs:


# ---------------------------------------------------------------------------------------------
# metrics.jsonl and TensorBoard events: whole-object writes.


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_metric_lines_are_stored_by_the_flush_and_truncated_on_resume(where, tmp_path, request):
    workdir = str(tmp_path) if where == "local" else request.getfixturevalue("bucket") + "/run"
    log = MetricLogger(workdir, flush_seconds=3600)
    log.truncate_after(0)
    for step in (1, 2, 3):
        log.write(step, {"loss": 1.0 / step, "odd": float("nan")})
    path = storage.join(workdir, "metrics.jsonl")
    # Local lines are appended as they come; an object is written whole at the flush.
    assert len(read_lines(path)) == (3 if where == "local" else 0)
    log.flush()
    assert [json.loads(x)["step"] for x in read_lines(path)] == [1, 2, 3]
    assert json.loads(read_lines(path)[0]) == {"step": 1, "loss": 1.0, "odd": "nan"}
    resumed = MetricLogger(workdir, flush_seconds=0)
    resumed.truncate_after(2)  # a resume from step 2 drops step 3 at once
    assert [json.loads(x)["step"] for x in read_lines(path)] == [1, 2]
    resumed.write(3, {"loss": 0.5})  # flush_seconds=0: written at every write
    assert [json.loads(x)["step"] for x in read_lines(path)] == [1, 2, 3]
    evaluation = MetricLogger(workdir)  # another run into the same workdir keeps the lines
    evaluation.write(3, {"test/top1": 50.0})
    evaluation.flush()
    assert [json.loads(x)["step"] for x in read_lines(path)] == [1, 2, 3, 3]


def _scalars(logdir):
    """{(step, tag): value} and the SessionLog.START steps of every event file in ``logdir``."""
    from tensorboard.compat.proto import event_pb2  # noqa: PLC0415

    values, starts = {}, []
    for name in storage.listdir(logdir):
        if "tfevents" not in name:
            continue
        for payload in events.read_records(storage.read_bytes(storage.join(logdir, name))):
            event = event_pb2.Event.FromString(payload)
            if event.HasField("session_log"):
                starts.append(event.step)
            for v in event.summary.value:
                values[(event.step, v.tag)] = v.simple_value
    return values, starts


def test_event_parts_roll_over_and_read_back_in_order(bucket):
    logdir = f"{bucket}/run"
    writer = events.EventWriter(logdir, part_bytes=600)
    for step in range(1, 31):
        writer.write_scalars(step, {"loss": 1.0 / step})
    writer.restart(20)
    writer.close()
    names = [n for n in storage.listdir(logdir) if "tfevents" in n]
    assert len(names) > 2 and names == sorted(names)
    assert all(storage.size(storage.join(logdir, n)) <= 600 for n in names)
    values, starts = _scalars(logdir)
    assert values == {(s, "loss"): pytest.approx(1.0 / s) for s in range(1, 31)}
    assert starts == [20]


def test_a_torn_or_corrupt_event_record_is_told_apart():
    data = events.record(b"abc") + events.record(b"defg")
    assert events.read_records(data) == [b"abc", b"defg"]
    assert events.read_records(data[:-3]) == [b"abc"]  # torn end
    with pytest.raises(ValueError, match="checksum"):
        events.read_records(data[:13] + b"X" + data[14:])


# ---------------------------------------------------------------------------------------------
# The bad-input log on gs://: per-process parts, merged.


def _log_from_a_process(path, names):
    log = bad_inputs.BadInputLog(path)
    for name in names:
        log.write(name, f"cannot decode {name}")


def test_bad_inputs_from_several_processes_merge_once_each(gcs, bucket):
    path = f"{bucket}/run/bad_inputs.txt"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_log_from_a_process, args=(path, names)) for names in (["a", "b"], ["c"])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = bad_inputs.BadInputLog(path)
    log.write("a", "another reason")  # already listed by another process: not again
    log.write("d", "truncated")
    assert sorted(bad_inputs.read_bad_input_log(path)) == [
        ("a", "cannot decode a"),
        ("b", "cannot decode b"),
        ("c", "cannot decode c"),
        ("d", "truncated"),
    ]
    assert not storage.exists(path)
    bad_inputs.consolidate(path)
    lines = storage.read_text(path).splitlines()
    assert sorted(lines) == ["a\tcannot decode a", "b\tcannot decode b", "c\tcannot decode c", "d\ttruncated"]
    assert len(bad_inputs.read_bad_input_log(path)) == 4


def test_config_paths_and_workdirs_of_another_scheme_stop_before_anything_runs(tmp_path, monkeypatch):
    from egoexo_jax import config_schema, evaluate, train_loop  # noqa: PLC0415

    import tiny_config  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    c = tiny_config.get_config(str(tmp_path))
    c.init_from = "s3://bucket/pretrain"
    with pytest.raises(storage.PathError, match=r"^unsupported path s3://bucket/pretrain \(config.init_from\)"):
        config_schema.validate(c)
    c.init_from = ""
    c.evaluate.epic_tail_classes = "gs://b1x/verbs.csv,gs:/b1x/nouns.csv"
    with pytest.raises(storage.PathError, match=r"gs:/b1x/nouns.csv \(config.evaluate.epic_tail_classes\)"):
        config_schema.validate(c)
    c.evaluate.epic_tail_classes = ""
    for run in (train_loop.train_and_evaluate, evaluate.evaluate_only):
        with pytest.raises(storage.PathError, match=r"\(--workdir\)"):
            run(c, "gs:/bucket/run")
    assert os.listdir(tmp_path) == []
