"""The commands on ``gs://`` paths, against the local Cloud Storage server (tests/gcs_server.py):
convert, predict and precompute_teachers read and write objects and give what they give on local
paths; a missing object is a one-line error naming the flag and the URL; no command turns a URL
into a local folder named ``gs:``.

Every command runs with the test's temporary folder as working directory (in-process through its
``main(argv)``, or as a subprocess with ``cwd``), so a mangled URL would show up there.
"""

import io
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest
import test_precompute_teachers
import test_torch_zip
from PIL import Image

from egoexo_jax import precompute_parts, precompute_run, precompute_teachers, predict, storage
from egoexo_jax.checkpoint import converted, pretrained
from egoexo_jax.cli import InputError
from egoexo_jax.convert import __main__ as convert_cli
from egoexo_jax.convert.torch_zip import CheckpointReadError, load_torch_file
from egoexo_jax.labels import load_class_names

import fake_media

REPO = pathlib.Path(__file__).resolve().parents[1]
EGOEXO = REPO / "tests" / "fixtures" / "pyslowfast" / "egoexo_slowfast_r50" / "checkpoint.pyth"

# The tiny teachers, data and uninterrupted local run of test_precompute_teachers (module fixtures).
setup = test_precompute_teachers.setup
full_run = test_precompute_teachers.full_run


def _no_gs_folder(folder) -> None:
    assert not os.path.lexists(os.path.join(folder, "gs:")), f"a URL became a local folder in {folder}"


def _assert_same_tree(a, b) -> None:
    """Same keys, dtypes, shapes and bytes."""
    flat_a, tree_a = jax.tree.flatten(a)
    flat_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(flat_a, flat_b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def _error_lines(text: str) -> list:
    return [line for line in text.strip().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------
# convert


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_torch_reader_keeps_its_size_checks_on_objects(bucket, tmp_path, layout):
    """An object reads as the same file does; storage sizes are checked against the object's size."""
    flat = np.arange(8, dtype=np.float32)
    local = tmp_path / "w.pyth"
    test_torch_zip.write_pyth(local, {"0": flat}, {"w": ("0", 2, (2, 3), (3, 1))}, layout)
    url = f"{bucket}/w.pyth"
    storage.write_bytes(url, local.read_bytes())
    got = load_torch_file(url)["model_state"]["w"]
    np.testing.assert_array_equal(got, load_torch_file(local)["model_state"]["w"])
    np.testing.assert_array_equal(got, flat[2:8].reshape(2, 3))
    data = local.read_bytes()
    if layout == "legacy":  # a storage that claims more bytes than the object has left
        bad = data.replace(struct.pack("<q", 8) + flat.tobytes(), struct.pack("<q", 9) + flat.tobytes())
        words = "file has 32 bytes left"
    else:  # a storage that unpacks to more than the whole object (a zip bomb)
        n, bad = 1 << 20, io.BytesIO()
        with zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_DEFLATED) as z:
            tensor = ("FloatStorage", "0", n, 0, (n,), (1,))
            z.writestr("archive/data.pkl", test_torch_zip.tensors_pickle({"w": tensor}))
            z.writestr("archive/data/0", bytes(4 * n))
        bad = bad.getvalue()
        words = r"declares 4194304 bytes unpacked, more than \d+ bytes"
    storage.write_bytes(url, bad)
    with pytest.raises(CheckpointReadError, match=f"^{url}: .*{words}"):
        load_torch_file(url)
    storage.write_bytes(url, data[: len(data) // 2])
    with pytest.raises(CheckpointReadError, match=f"^{url}: .*truncated"):
        load_torch_file(url)


@pytest.fixture(scope="module")
def conversions(gcs, tmp_path_factory):
    """The Ego-Exo fixture converted local -> local and gs:// -> gs:// (one bucket per module)."""
    root = tmp_path_factory.mktemp("convert")
    bucket = gcs.new_bucket()
    source = f"{bucket}/in/checkpoint.pyth"
    storage.write_bytes(source, EGOEXO.read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        local_rc = convert_cli.main([f"--input={EGOEXO}", f"--output={root / 'local'}"])
        remote_rc = convert_cli.main([f"--input={source}", f"--output={bucket}/out/converted"])
    assert local_rc == 0 and remote_rc == 0
    return {
        "root": root,
        "bucket": bucket,
        "source": source,
        "local": str(root / "local"),
        "remote": f"{bucket}/out/converted",
    }


def test_convert_gs_to_gs_equals_a_local_conversion(conversions, gcs):
    c = conversions
    _no_gs_folder(c["root"])
    names = gcs.objects(c["bucket"])
    for name in ("model_config.json", "conversion.json", "pyslowfast_config.yaml", "variables/_METADATA"):
        assert f"out/converted/{name}" in names
    for name in ("model_config.json", "pyslowfast_config.yaml"):
        assert storage.read_bytes(f"{c['remote']}/{name}") == pathlib.Path(c["local"], name).read_bytes(), name
    remote_summary = json.loads(storage.read_text(f"{c['remote']}/conversion.json"))
    local_summary = json.loads(pathlib.Path(c["local"], "conversion.json").read_text())
    assert remote_summary.pop("source") == c["source"] and local_summary.pop("source") == str(EGOEXO)
    assert remote_summary == local_summary
    _, remote_vars, remote_cfg = converted.load_converted(c["remote"])
    _, local_vars, local_cfg = converted.load_converted(c["local"])
    assert remote_cfg == local_cfg
    _assert_same_tree(remote_vars, local_vars)


def test_load_pretrained_reads_every_gs_checkpoint_kind(conversions):
    c = conversions
    _, reference, _ = converted.load_converted(c["local"])
    assert converted.is_converted_dir(c["remote"]) and not converted.is_converted_dir(c["source"])
    cfg, variables, what = pretrained.load_pretrained(c["remote"], flag="--x")
    assert what == f"converted checkpoint {c['remote']}" and cfg.interaction_head
    _assert_same_tree(variables, reference)
    cfg, variables, what = pretrained.load_pretrained(c["source"], flag="--x")  # the .pyth, converted on the fly
    assert what.startswith(f"PySlowFast checkpoint {c['source']}")
    _assert_same_tree(jax.tree.map(np.asarray, variables), reference)
    # A prefix holding a checkpoint names it, as a local folder of checkpoints does.
    with pytest.raises(InputError, match=rf"it holds converted/: pass one of them, e\.g\. --x={c['remote']}$"):
        pretrained.load_pretrained(f"{c['bucket']}/out", flag="--x")


def test_convert_between_local_and_gs_both_ways(conversions, bucket, tmp_path, monkeypatch, capsys):
    c = conversions
    monkeypatch.chdir(tmp_path)
    assert convert_cli.main([f"--input={c['source']}", f"--output={tmp_path / 'from_gs'}"]) == 0
    assert convert_cli.main([f"--input={EGOEXO}", f"--output={bucket}/to_gs"]) == 0
    _, reference, _ = converted.load_converted(c["local"])
    for out in (str(tmp_path / "from_gs"), f"{bucket}/to_gs"):
        _assert_same_tree(converted.load_converted(out)[1], reference)
    capsys.readouterr()
    # A gs:// output that holds a conversion already is refused, like a local one.
    assert convert_cli.main([f"--input={EGOEXO}", f"--output={bucket}/to_gs"]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and f"{bucket}/to_gs/variables already exists" in err[0]
    _no_gs_folder(tmp_path)


# ----------------------------------------------------------------------------------------------
# predict


def _predict_rows(argv, capsys) -> tuple:
    """(first output line, the top-k rows) of one predict run."""
    assert predict.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    return out[0], [line for line in out if line.strip()[:1].isdigit()]


def _predict_args(checkpoint, video, labels, png) -> list:
    return [
        f"--checkpoint={checkpoint}",
        f"--video={video}",
        f"--labels={labels}",
        f"--save_maps={png}",
        "--top_k=3",
        "--temporal_views=2",
        "--spatial_crops=1",
    ]


def test_predict_on_gs_gives_the_local_top_k_and_writes_the_png(
    conversions, gcs, bucket, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    video, labels = tmp_path / "clip.mp4", tmp_path / "labels.txt"
    fake_media.write_video(video, 60, height=64, width=80)
    labels.write_text("\n".join(f"action_{i}" for i in range(10)) + "\n")
    storage.write_bytes(f"{bucket}/media/clip.mp4", video.read_bytes())
    storage.write_bytes(f"{bucket}/media/labels.txt", labels.read_bytes())

    _, local_rows = _predict_rows(_predict_args(EGOEXO, video, labels, tmp_path / "maps.png"), capsys)
    png = f"{bucket}/out/maps.png"
    head, gs_rows = _predict_rows(
        _predict_args(conversions["remote"], f"{bucket}/media/clip.mp4", f"{bucket}/media/labels.txt", png), capsys
    )
    assert head.startswith(f"converted checkpoint {conversions['remote']}: {bucket}/media/clip.mp4")
    assert len(gs_rows) == 3 and all("action_" in r for r in gs_rows)
    assert gs_rows == local_rows
    assert "out/maps.png" in gcs.objects(bucket)
    local_img = np.asarray(Image.open(tmp_path / "maps.png").convert("RGB"))
    gs_img = np.asarray(Image.open(io.BytesIO(storage.read_bytes(png))).convert("RGB"))
    np.testing.assert_array_equal(gs_img, local_img)
    _no_gs_folder(tmp_path)


@pytest.mark.slow  # the shared fixture trains the demo student first (about 1-2 min on 2 cores)
def test_predict_on_a_training_workdir_in_a_bucket(quick_demo_root, bucket, tmp_path, monkeypatch, capsys):
    """A training workdir copied into a bucket: its checkpoint and config.json (the sampling rate)
    are read from there, and the top-k is that of the local workdir."""
    monkeypatch.chdir(tmp_path)
    local = quick_demo_root / "pretrain_egoexo"
    storage.copy_tree(str(local), f"{bucket}/runs/pretrain_egoexo")
    video = tmp_path / "clip.mp4"
    fake_media.write_video(video, 40, height=48, width=64)
    storage.write_bytes(f"{bucket}/clip.mp4", video.read_bytes())
    labels = quick_demo_root / "data" / "classes_pretrain.txt"
    args = ["--temporal_views=1", "--spatial_crops=1", f"--labels={labels}"]
    _, local_rows = _predict_rows([f"--checkpoint={local}", f"--video={video}", *args], capsys)
    head, gs_rows = _predict_rows(
        [f"--checkpoint={bucket}/runs/pretrain_egoexo", f"--video={bucket}/clip.mp4", *args], capsys
    )
    assert head.startswith(f"training workdir {bucket}/runs/pretrain_egoexo (step 2)")
    assert gs_rows == local_rows and len(gs_rows) == 5
    _no_gs_folder(tmp_path)


# ----------------------------------------------------------------------------------------------
# Missing objects and unknown schemes: one line, exit status 2.


def test_missing_gs_inputs_are_one_line_errors_naming_flag_and_url(
    conversions, gcs, bucket, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    missing = f"{bucket}/nothing/here"
    cases = [
        (convert_cli.main, [f"--input={missing}.pyth", f"--output={bucket}/o"], f"--input={missing}.pyth"),
        (predict.main, [f"--checkpoint={missing}", f"--video={missing}.mp4"], f"--checkpoint={missing}"),
        (predict.main, [f"--checkpoint={conversions['remote']}", f"--video={missing}.mp4"], f"--video={missing}.mp4"),
        (
            precompute_teachers.main,
            [
                f"--config={REPO / 'configs' / 'pretrain.py'}:online",
                f"--output={bucket}/teachers",
                f"--config.teachers.ego.checkpoint={missing}",
            ],
            f"config.teachers.ego.checkpoint={missing}",
        ),
        (
            convert_cli.main,
            ["--input=s3://b/x.pyth", f"--output={bucket}/o"],
            "unsupported path s3://b/x.pyth (--input)",
        ),
    ]
    for main, argv, named in cases:
        assert main(argv) == 2, argv
        err = _error_lines(capsys.readouterr().err)
        assert len(err) == 1 and err[0].startswith("error: ") and named in err[0], (argv, err)
    with pytest.raises(FileNotFoundError, match=f"nor an existing file \\({missing}.txt not found\\)"):
        load_class_names(f"{missing}.txt")  # predict's --labels
    assert gcs.objects(bucket) == []  # nothing written for a failed command
    _no_gs_folder(tmp_path)


def test_convert_subprocess_missing_object(bucket, tmp_path):
    """``python -m egoexo_jax.convert`` in a subprocess: the same one line, and nothing appears in its
    working directory."""
    res = subprocess.run(
        [sys.executable, "-m", "egoexo_jax.convert", f"--input={bucket}/x.pyth", f"--output={bucket}/out"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    assert res.returncode == 2
    err = _error_lines(res.stderr)
    assert len(err) == 1 and err[0] == (
        f"error: no such file, --input={bucket}/x.pyth, expected a PySlowFast .pyth checkpoint file"
    )
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# precompute_teachers


def _recipe(tmp_path, config) -> str:
    """A recipe file whose ``get_config`` returns ``config`` (the test's tiny teachers and data)."""
    frozen = tmp_path / "config.pkl"
    frozen.write_bytes(pickle.dumps(config))
    recipe = tmp_path / "recipe.py"
    recipe.write_text(
        "import pickle\n\n\ndef get_config():\n"
        f"    with open({str(frozen)!r}, 'rb') as f:\n        return pickle.load(f)\n"
    )
    return str(recipe)


@pytest.mark.parametrize("inputs", ["local", "gs"])
def test_precompute_to_gs_resumes_and_matches_a_local_run(
    setup, full_run, gcs, bucket, tmp_path, monkeypatch, capsys, inputs
):
    """Output in a bucket (inputs: the list, videos and ego teacher local, or in the bucket too): the
    parts, manifest, pickles and bad_inputs.txt are objects; a second run skips the finished part."""
    root, c, _ = setup
    local_out, _ = full_run
    monkeypatch.chdir(tmp_path)
    data = str(root / "kinetics")
    if inputs == "gs":
        c = c.copy_and_resolve_references()
        data = f"{bucket}/in/kinetics"
        storage.copy_tree(str(root / "kinetics"), data)
        storage.copy_tree(str(root / "ego_teacher"), f"{bucket}/in/ego_teacher")
        c.data.update(path_to_data_dir=data, path_prefix=data)
        c.teachers.ego.checkpoint = f"{bucket}/in/ego_teacher"
    out = f"{bucket}/teachers"
    first = precompute_run.precompute(
        c, out, chunk_size=2, batch_size=2, allow_random_object_teacher=True, max_chunks=1
    )  # "killed" after its first part
    assert not first.complete and first.chunks_done == 1
    written = [n for n in gcs.objects(bucket) if n.startswith("teachers/")]
    assert written == ["teachers/parts/manifest.json", "teachers/parts/part-000000.npz"]
    part0 = storage.gcs().info(precompute_parts.part_path(out, 0))["generation"]

    argv = [f"--config={_recipe(tmp_path, c)}", f"--output={out}", "--chunk_size=2", "--batch_size=2"]
    assert precompute_teachers.main([*argv, "--allow_random_object_teacher"]) == 0
    printed = capsys.readouterr().out
    assert f"ego teacher: {out}/{precompute_parts.EGO_FILE}" in printed
    assert f"1 unreadable videos listed in {out}/{precompute_parts.BAD_INPUTS}" in printed
    assert storage.gcs().info(precompute_parts.part_path(out, 0))["generation"] == part0  # skipped, not redone
    outputs = (precompute_parts.EGO_FILE, precompute_parts.OBJECT_FILE, precompute_parts.BAD_INPUTS)
    assert [n for n in gcs.objects(bucket) if n.startswith("teachers/")] == sorted(
        [f"teachers/parts/part-00000{i}.npz" for i in range(3)]
        + ["teachers/parts/manifest.json"]
        + [f"teachers/{n}" for n in outputs]
    )
    for name in (precompute_parts.EGO_FILE, precompute_parts.OBJECT_FILE):
        assert storage.read_bytes(f"{out}/{name}") == (local_out / name).read_bytes(), name
    (bad,) = storage.read_text(f"{out}/{precompute_parts.BAD_INPUTS}").splitlines()
    path, reason = bad.split("\t")
    assert path == f"{data}/{test_precompute_teachers.CORRUPT}" and reason
    # Settings that differ from the bucket's manifest are refused, naming it.
    assert precompute_teachers.main([*argv[:2], "--chunk_size=3", "--batch_size=2", "--merge"]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and f"{out}/parts/manifest.json" in err[0] and "chunk_size" in err[0]
    _no_gs_folder(tmp_path)
