"""precompute_teachers: online teachers run once over a Kinetics-style list and written in the
official offline formats (read back by the offline reader), resumable to byte-identical files,
corrupt videos listed and skipped, errors that name the key / file.

Tiny teachers: a random-init 2D ResNet-18 (width 4) object teacher and a 2-way Slow R18 (width 4,
2 frames) ego teacher saved as a converted directory; 5 short generated videos + 1 corrupt one.
"""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from egoexo_jax import config_schema, models, precompute_parts, precompute_run, precompute_teachers, teacher_loading
from egoexo_jax.checkpoint.converted import save_converted
from egoexo_jax.convert import pyslowfast
from egoexo_jax.data import teacher_scores
from egoexo_jax.models import presets

import fake_media

NUM_VIDEOS = 5
CORRUPT = "broken/corrupt.mp4"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("precompute")
    data = root / "kinetics"
    names = fake_media.write_kinetics_dataset(data, [20, 24, 16, 30, 20][:NUM_VIDEOS], height=40, width=48)
    os.makedirs(data / "broken")
    (data / CORRUPT).write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 4)
    with open(data / "train.csv", "w") as f:  # the corrupt video in the middle of the list
        f.writelines(f"{n} {i}\n" for i, n in enumerate(names[:2]))
        f.write(f"{CORRUPT} 0\n")
        f.writelines(f"{n} {i + 2}\n" for i, n in enumerate(names[2:]))

    ego_cfg = presets.slow(18, width_per_group=4, num_frames=2, crop_size=32, num_classes=(2,), bn_group_size=0)
    module = models.build(ego_cfg)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), [jnp.zeros((1, 2, 32, 32, 3))], train=False))
    rng = np.random.default_rng(5)
    variables = jax.tree.map(lambda x: (0.3 * rng.standard_normal(x.shape)).astype(np.float32), dict(shapes))
    variables["batch_stats"] = jax.tree.map(lambda x: np.abs(x) + 0.5, variables["batch_stats"])  # var > 0
    conv = pyslowfast.Conversion(
        module=module, variables=variables, model_config=ego_cfg, report={"mapped": []}, pyslowfast_cfg={}, epoch=None
    )
    save_converted(conv, str(root / "ego_teacher"), "memory")

    c = config_schema.base_config()
    c.model = presets.slowfast(18, width_per_group=4, num_frames=8, crop_size=32, num_classes=(5,))
    c.model.ego_classes, c.model.object_classes = 2, 1000
    c.data.update(
        path_to_data_dir=str(data),
        path_prefix=str(data),
        num_classes=5,
        num_frames=8,
        sampling_rate=2,
        train_jitter_scales=(36, 44),
        train_crop_size=32,
        num_threads=2,
    )
    c.teachers.ego.update(source="online", checkpoint=str(root / "ego_teacher"))
    c.teachers.object.update(source="online", weights="", depth=18, width=4, num_frames=2)
    return root, c, [n for n in names]


def _run(c, out, **kw):
    return precompute_run.precompute(c, str(out), chunk_size=2, batch_size=2, allow_random_object_teacher=True, **kw)


@pytest.fixture(scope="module")
def full_run(setup):
    root, c, _ = setup
    out = root / "uninterrupted"
    result = _run(c, out)
    return out, result


def test_output_loads_through_the_offline_reader_keyed_by_csv_paths(setup, full_run):
    root, c, names = setup
    out, result = full_run
    assert result.complete and result.num_chunks == 3  # 6 list entries, chunks of 2
    ego = teacher_scores.TeacherScores(str(out / precompute_parts.EGO_FILE), num_classes=2)
    obj = teacher_scores.TeacherScores(str(out / precompute_parts.OBJECT_FILE), num_classes=1000)
    assert list(ego.keys()) == names == list(obj.keys())  # list order, corrupt video left out
    assert np.all(np.isfinite(ego.values)) and np.all(np.isfinite(obj.values))
    assert np.std(ego.values[:, 1] - ego.values[:, 0]) > 0  # per-video values, not constant
    with open(out / precompute_parts.EGO_FILE, "rb") as f:
        raw = pickle.load(f)
    assert type(raw) is dict and all(v.dtype == np.float32 and v.shape == (2,) for v in raw.values())

    # The values are the online teachers' targets on the centre clip (the documented view).
    from egoexo_jax.data import sources

    fn, tvars = teacher_loading.from_config(c, c.model)
    view = precompute_run.TeacherView.from_config(c.data)
    item = sources.build_source(c.data, "train").item(3)  # names[2]
    p = view.pathways(item)
    assert p["pathway0"].shape == (2, 32, 32, 3) and p["pathway1"].shape == (8, 32, 32, 3)
    two = [np.stack([p[k], np.zeros_like(p[k])]) for k in ("pathway0", "pathway1")]  # the run's batch shape
    want = precompute_run.teacher_function(fn)(tvars, two)
    np.testing.assert_allclose(ego[names[2]], np.asarray(want["ego_target"][0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(obj[names[2]], np.asarray(want["object_target"][0]), rtol=1e-5, atol=1e-5)


def test_corrupt_video_is_listed_not_fatal(setup, full_run):
    root, _, _ = setup
    out, _ = full_run
    lines = (out / precompute_parts.BAD_INPUTS).read_text().splitlines()
    assert len(lines) == 1
    path, reason = lines[0].split("\t")
    assert path == str(root / "kinetics" / CORRUPT) and reason


def test_interrupted_and_restarted_run_is_byte_identical(setup, full_run):
    root, c, _ = setup
    out, _ = full_run
    resumed = root / "resumed"
    first = _run(c, resumed, max_chunks=1)  # "killed" after the first part file
    assert not first.complete and first.chunks_done == 1
    assert sorted(os.listdir(resumed / precompute_parts.PARTS)) == ["manifest.json", "part-000000.npz"]
    assert not (resumed / precompute_parts.EGO_FILE).exists()
    (resumed / precompute_parts.PARTS / ".tmp-x-part-000001.npz").write_bytes(b"half-written")  # a killed write
    part0 = (resumed / precompute_parts.PARTS / "part-000000.npz").stat().st_mtime_ns
    second = _run(c, resumed)
    assert second.complete and second.chunks_done == 2  # chunk 0 skipped
    assert (resumed / precompute_parts.PARTS / "part-000000.npz").stat().st_mtime_ns == part0
    for name in (precompute_parts.EGO_FILE, precompute_parts.OBJECT_FILE, precompute_parts.BAD_INPUTS):
        assert (resumed / name).read_bytes() == (out / name).read_bytes(), name

    # Two "hosts": each computes its own chunks; the merge step (process 0 / --merge) joins them.
    hosts = root / "hosts"
    r1 = _run(c, hosts, process_index=1, process_count=2)
    assert not r1.complete and sorted(os.listdir(hosts / precompute_parts.PARTS)) == [
        "manifest.json",
        "part-000001.npz",
    ]
    with pytest.raises(precompute_parts.PrecomputeError, match=r"2 of 3 chunks missing \(0, 2\)"):
        _run(c, hosts, merge_only=True)
    r0 = _run(c, hosts, process_index=0, process_count=2)
    assert r0.complete and r0.chunks_done == 2
    assert (hosts / precompute_parts.OBJECT_FILE).read_bytes() == (out / precompute_parts.OBJECT_FILE).read_bytes()

    # Other settings on the same parts folder are refused, naming what differs.
    with pytest.raises(precompute_parts.PrecomputeError, match="chunk_size"):
        precompute_run.precompute(c, str(resumed), chunk_size=3, batch_size=2, allow_random_object_teacher=True)


def test_errors_name_the_key_or_file(setup, tmp_path, capsys):
    _, c, _ = setup
    bad = c.copy_and_resolve_references()
    del bad.teachers.object["num_frames"]
    with pytest.raises(precompute_parts.PrecomputeError, match=r"missing key 'teachers.object.num_frames'"):
        precompute_run.precompute(bad, str(tmp_path / "a"))
    bad = c.copy_and_resolve_references()
    bad.teachers.ego.checkpoint = str(tmp_path / "no_teacher")
    with pytest.raises(precompute_parts.PrecomputeError, match=r"teachers.ego.checkpoint=.*no_teacher: no such file"):
        precompute_run.precompute(bad, str(tmp_path / "a"))
    bad = c.copy_and_resolve_references()
    bad.teachers.object.weights = str(tmp_path / "resnet50.pth")
    with pytest.raises(precompute_parts.PrecomputeError, match=r"teachers.object.weights=.*resnet50.pth: no such file"):
        precompute_run.precompute(bad, str(tmp_path / "a"))
    with pytest.raises(precompute_parts.PrecomputeError, match="weights is empty"):
        precompute_run.precompute(c, str(tmp_path / "a"))
    bad = c.copy_and_resolve_references()
    bad.teachers.ego.source = bad.teachers.object.source = "file"
    with pytest.raises(precompute_parts.PrecomputeError, match="at least one must be 'online'"):
        precompute_run.precompute(bad, str(tmp_path / "a"))
    # The command line: a missing ego teacher is one line on stderr, exit status 2.
    rc = precompute_teachers.main(
        [
            "--config=configs/pretrain.py:online",
            f"--output={tmp_path / 'cli'}",
            f"--config.teachers.ego.checkpoint={tmp_path / 'missing_ego'}",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "teachers.ego.checkpoint" in err and "missing_ego" in err
    rc = precompute_teachers.main(
        ["--config=configs/pretrain.py:online", f"--output={tmp_path / 'cli'}", "--config.teachers.ego.chekpoint=x"]
    )
    assert rc == 2 and "did you mean 'teachers.ego.checkpoint'" in capsys.readouterr().err


def _parts(out, chunks):
    for c in chunks:
        precompute_parts.write_part(
            precompute_parts.part_path(str(out), c),
            chunk=c,
            start=2 * c,
            stop=2 * c + 2,
            keys=[f"v{2 * c}.mp4", f"v{2 * c + 1}.mp4"],
            scores={"ego": np.full((2, 2), c, np.float32)},
            bad=[],
        )


def test_truncated_part_is_set_aside_and_its_chunk_redone(tmp_path, caplog):
    """Was zipfile.BadZipFile on rerun; now one warning line and the chunk counts as not done."""
    _parts(tmp_path, range(3))
    part = tmp_path / precompute_parts.PARTS / "part-000001.npz"
    whole = part.read_bytes()
    part.write_bytes(whole[: len(whole) // 2])
    assert precompute_parts.finished_chunks(str(tmp_path)) == {0, 1, 2}
    with caplog.at_level("WARNING"):
        assert precompute_parts.set_aside_damaged(str(tmp_path), [0, 1, 2], ["ego"]) == [1]
    assert precompute_parts.finished_chunks(str(tmp_path)) == {0, 2}
    assert (tmp_path / precompute_parts.PARTS / "part-000001.npz.damaged").read_bytes() == whole[: len(whole) // 2]
    (line,) = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    assert line.startswith(f"{part}: unreadable part file (BadZipFile: ") and line.endswith(
        f"set aside as {part}.damaged, chunk 1 is computed again"
    )
    # A part damaged inside (its directory intact) is found by the merge, set aside, named.
    _parts(tmp_path, [1])
    whole = part.read_bytes()
    at = whole.index(b"v2.mp4".decode().encode("utf-32-le"))
    part.write_bytes(whole[:at] + b"X" + whole[at + 1 :])
    assert precompute_parts.set_aside_damaged(str(tmp_path), [0, 1, 2], ["ego"]) == []
    with pytest.raises(precompute_parts.PrecomputeError, match=r"1 of 3 part files were unreadable \(chunks 1\)"):
        precompute_parts.merge(str(tmp_path), num_chunks=3, signals=["ego"])
    assert precompute_parts.finished_chunks(str(tmp_path)) == {0, 2}
    _parts(tmp_path, [1])
    written = precompute_parts.merge(str(tmp_path), num_chunks=3, signals=["ego"])
    assert list(teacher_scores.TeacherScores(written["ego"], num_classes=2).keys()) == [f"v{i}.mp4" for i in range(6)]
