"""Teacher files: round trips, malformed entries, frame conventions, and refusing unsafe pickles."""

import io
import os
import pickle

import numpy as np
import pytest

from egoexo_jax.data import aux_targets, handobj, restricted_pickle, teacher_scores
from egoexo_jax.data.errors import TeacherFileError

# ------------------------------------------------------------------------------ restricted unpickler


class _Evil:
    """Pickles to a call of ``os.system`` (never executed by the tests)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"video.mp4": _Evil(marker)})
    with pytest.raises(restricted_pickle.UnsafePickleError, match="system"):
        restricted_pickle.loads(payload)
    assert not marker.exists()
    # Through the public readers as well.
    path = tmp_path / "k400_ego_predicts.pkl"
    path.write_bytes(payload)
    with pytest.raises(TeacherFileError, match="system"):
        teacher_scores.TeacherScores(path)
    npy = tmp_path / "vid.npy"
    npy.write_bytes(pickle.dumps([(None, _Evil(marker))]))  # bare-pickle .npy (np.load fallback path)
    with pytest.raises(TeacherFileError, match="system"):
        handobj.load_detection_file(npy)
    # And inside a genuine .npy object array.
    arr = np.empty((1, 2), dtype=object)
    arr[0, 0] = _Evil(marker)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    npy.write_bytes(buf.getvalue())
    with pytest.raises(TeacherFileError, match="system"):
        handobj.load_detection_file(npy)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_unpickler_reads_numpy_objects(protocol):
    obj = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": [np.float32(1.5), np.int64(3)],
        "c": (None, np.zeros((0, 6), np.float64)),
        "d": np.asfortranarray(np.ones((2, 3))),
    }
    back = restricted_pickle.loads(pickle.dumps(obj, protocol=protocol))
    np.testing.assert_array_equal(back["a"], obj["a"])
    assert back["b"] == [1.5, 3] and back["c"][0] is None and back["c"][1].shape == (0, 6)
    np.testing.assert_array_equal(back["d"], obj["d"])


def test_load_npy_plain_and_fortran(tmp_path):
    for arr in (np.arange(12, dtype=np.int16).reshape(3, 4), np.asfortranarray(np.random.rand(3, 5))):
        np.save(tmp_path / "x.npy", arr)
        np.testing.assert_array_equal(restricted_pickle.load_npy(tmp_path / "x.npy"), arr)


# ------------------------------------------------------------------------------ score pickles


def test_score_pickle_round_trip_and_lookup(tmp_path):
    rng = np.random.default_rng(0)
    scores = {f"abseiling/vid{i:03d}_000010_000020.mp4": rng.normal(size=2).astype(np.float32) for i in range(5)}
    path = tmp_path / "k400_ego_predicts.pkl"
    teacher_scores.write_score_pickle(path, scores)
    # The official reader is a plain pickle.load of a dict of 1-D float arrays.
    with open(path, "rb") as fp:
        plain = pickle.load(fp)
    assert type(plain) is dict and set(plain) == set(scores)
    teacher = teacher_scores.TeacherScores(path, num_classes=2)
    assert len(teacher) == 5 and teacher.values.shape == (5, 2) and teacher.values.dtype == np.float32
    key = "abseiling/vid003_000010_000020.mp4"
    np.testing.assert_array_equal(teacher[key], scores[key])
    assert teacher.get("missing.mp4") is None
    with pytest.raises(KeyError, match="missing.mp4"):
        teacher["missing.mp4"]
    values, mask = teacher.lookup([key, "missing.mp4"])
    np.testing.assert_array_equal(values[0], scores[key])
    np.testing.assert_array_equal(values[1], 0.0)
    np.testing.assert_array_equal(mask, [1.0, 0.0])
    # Pickles written elsewhere: lists and float64 arrays are accepted and converted to float32.
    with open(path, "wb") as fp:
        pickle.dump({"a.mp4": [0.1, 0.9], "b.mp4": np.array([1.0, 2.0])}, fp, protocol=2)
    teacher = teacher_scores.TeacherScores(path)
    assert teacher.num_classes == 2 and teacher["a.mp4"].dtype == np.float32


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"a.mp4": np.zeros(3)}, "3 values, expected 2"),
        ({"a.mp4": np.zeros((1, 2))}, "1-D"),
        ({"a.mp4": np.array([np.nan, 1.0])}, "NaN"),
        ({"a.mp4": "0.1 0.9"}, "not numeric"),
        ({"a.mp4": {"x": 1}}, "not a numeric array"),
        ({3: np.zeros(2)}, "not a string"),
        ([np.zeros(2)], "expected a dict"),
    ],
)
def test_score_pickle_malformed(tmp_path, bad, message):
    path = tmp_path / "scores.pkl"
    path.write_bytes(pickle.dumps(bad))
    with pytest.raises(TeacherFileError, match=message) as err:
        teacher_scores.TeacherScores(path, num_classes=2)
    assert "scores.pkl" in str(err.value)


# ------------------------------------------------------------------------------ detection files


def _frame(n_obj, n_hand, rng, cols=10):
    def dets(n):
        if n is None:
            return None
        d = rng.uniform(0, 200, size=(n, cols)).astype(np.float32)
        d[:, 4] = rng.uniform(size=n)
        return d

    return (dets(n_obj), dets(n_hand))


def test_detections_round_trip_and_meta_rows(tmp_path):
    rng = np.random.default_rng(1)
    frames = [_frame(o, h, rng) for o, h in [(1, 2), (None, None), (0, 1), (3, None), (2, 2)]]
    handobj.write_detections(tmp_path / "vid.npy", frames)
    # The official reader: np.load(allow_pickle=True), then `o, h = d` per frame.
    official = np.load(tmp_path / "vid.npy", allow_pickle=True)
    for (o, h), (ro, rh) in zip(official, frames):
        for a, b in ((o, ro), (h, rh)):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
    dets = handobj.HandObjectDetections(tmp_path, cache_size=2)
    positions = [4, 1, 0, 0]
    hands, objs = dets.boxes_for_frames("vid", positions)
    # Reference: the official parse (rows of each clip frame in clip order, column 5 = clip index).
    ref_h, ref_o = [], []
    for t, p in enumerate(positions):
        o, h = frames[p]
        for src, dst in ((o, ref_o), (h, ref_h)):
            if src is not None and len(src):
                rows = src[:, :6].copy()
                rows[:, 5] = t
                dst.append(rows)
    np.testing.assert_array_equal(hands, np.concatenate(ref_h))
    np.testing.assert_array_equal(objs, np.concatenate(ref_o))
    assert hands.dtype == np.float32 and hands.shape[1] == 6
    # A frame without detections gives [0, 6].
    h, o = dets.boxes_for_frames("vid", [1])
    assert h.shape == (0, 6) and o.shape == (0, 6)


def test_detections_lru_cache_and_missing_video(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("a", "b", "c"):
        handobj.write_detections(tmp_path / f"{name}.npy", [_frame(1, 1, rng)])
    dets = handobj.HandObjectDetections(tmp_path, cache_size=2)
    first = dets.video("a")
    assert dets.video("a") is first
    dets.video("b")
    dets.video("c")  # evicts "a"
    assert dets.video("a") is not first
    with pytest.raises(FileNotFoundError, match="nope"):
        dets.video("nope")
    # Picklable (data-loader workers); the copy starts with an empty cache.
    clone = pickle.loads(pickle.dumps(dets))
    assert clone.folder == dets.folder and clone.cache_size == 2
    np.testing.assert_array_equal(clone.video("a").hand_boxes, first.hand_boxes)


def test_frame_conventions_and_length_check(tmp_path):
    rng = np.random.default_rng(3)
    frames = [_frame(None, 1, rng) for _ in range(10)]
    handobj.write_detections(tmp_path / "P01_11.npy", frames)
    dets = handobj.HandObjectDetections(tmp_path)
    # EPIC: list position = absolute 1-based frame number start_frame + offset.
    positions = handobj.epic_frame_positions(3, [0, 2, 4])
    np.testing.assert_array_equal(positions, [3, 5, 7])
    hands, _ = dets.boxes_for_frames("P01_11", positions)
    np.testing.assert_array_equal(hands[:, :5], np.concatenate([frames[p][1][:, :5] for p in (3, 5, 7)]))
    np.testing.assert_array_equal(hands[:, 5], [0, 1, 2])
    # Charades-Ego: the list must be as long as the frame list.
    dets.boxes_for_frames("P01_11", [0, 9], expected_length=10)
    with pytest.raises(TeacherFileError, match="10 frames but the frame list has 11"):
        dets.boxes_for_frames("P01_11", [0], expected_length=11)
    with pytest.raises(IndexError, match="P01_11.npy: frame position 10"):
        dets.boxes_for_frames("P01_11", [10])
    assert handobj.kinetics_video_name("train/abseiling/-3B32lodo2M_000059_000069.mp4") == "-3B32lodo2M_000059_000069"
    assert handobj.charades_ego_video_name("rgb/005BUEGO/005BUEGO-000001.jpg") == "005BUEGO"


@pytest.mark.parametrize(
    "entry, message",
    [
        ((np.zeros((2, 4), np.float32), None), r"frame entry 1 \(objects\).*\[N, >=6\]"),
        ((None, np.zeros(6, np.float32)), r"frame entry 1 \(hands\)"),
        ((None, np.full((1, 6), np.nan, np.float32)), r"frame entry 1 \(hands\).*NaN"),
        ((None, None, None), "frame entry 1 has 3 elements"),
        (np.float32(3.0), "frame entry 1 is float32"),
        ((None, "boxes"), r"frame entry 1 \(hands\): expected None or an array"),
    ],
)
def test_malformed_detection_entries(tmp_path, entry, message):
    good = (None, np.zeros((1, 6), np.float32))
    arr = np.empty(2, dtype=object)
    arr[0] = good
    arr[1] = entry
    path = tmp_path / "broken.npy"
    with open(path, "wb") as fp:
        np.save(fp, arr, allow_pickle=True)
    with pytest.raises(TeacherFileError, match=message) as err:
        handobj.HandObjectDetections(tmp_path).video("broken")
    assert "broken.npy" in str(err.value)


def test_truncated_detection_file(tmp_path):
    handobj.write_detections(tmp_path / "v.npy", [_frame(1, 1, np.random.default_rng(4))] * 3)
    data = (tmp_path / "v.npy").read_bytes()
    (tmp_path / "v.npy").write_bytes(data[: len(data) - 20])
    with pytest.raises(TeacherFileError, match="v.npy"):
        handobj.load_detection_file(tmp_path / "v.npy")


# ------------------------------------------------------------------------------ range checks when read


@pytest.mark.parametrize(
    "row, message",
    [
        (
            [10, 10, 20, 20, 1e30, 0],
            r"frame entry 1 \(hands\): row 1 has score 1e\+30; expected a detector confidence in \[0, 1\]",
        ),
        ([10, 10, 20, 20, -0.5, 0], r"row 1 has score -0.5; expected a detector confidence"),
        ([10, 1e30, 20, 20, 0.5, 0], r"row 1 has box corners \[10.0, 1e\+30, 20.0, 20.0\]; expected pixel coordinates"),
        ([10, 10, np.inf, 20, 0.5, 0], r"row 1 \[10.0, 10.0, inf, 20.0, 0.5\] has NaN or infinite values"),
    ],
)
def test_detection_scores_and_boxes_out_of_range_name_file_entry_and_row(tmp_path, row, message):
    """A hand score of 1e30 used to end training as a non-finite loss; now the file names it."""
    hands = np.array([[1, 1, 5, 5, 0.9, 0], row], np.float64)
    arr = np.empty((2, 2), dtype=object)
    arr[0] = (None, None)
    arr[1] = (None, hands)
    with open(tmp_path / "v.npy", "wb") as fp:
        np.save(fp, arr, allow_pickle=True)
    with pytest.raises(TeacherFileError, match=message) as err:
        handobj.load_detection_file(tmp_path / "v.npy")
    assert str(err.value).startswith(f"{tmp_path / 'v.npy'}: frame entry 1 (hands)")


@pytest.mark.parametrize(
    "entry, message",
    [
        ([[0.1, 0.2], [0.3]], r"entry 'b.mp4': element 0 is a list; expected a flat vector of 2 numbers"),
        ([0.5, [[[[0.1]]]]], r"entry 'b.mp4': element 1 is a list; expected a flat vector of 2 numbers"),
        (
            np.array([1.0, 1e30], np.float32),
            r"entry 'b.mp4' has the value 1e\+30; expected teacher logits within \+-10000",
        ),
    ],
)
def test_ragged_nested_or_huge_score_entries_name_the_file_and_entry(tmp_path, entry, message):
    path = tmp_path / "ego.pkl"
    path.write_bytes(pickle.dumps({"a.mp4": np.zeros(2, np.float32), "b.mp4": entry}))
    aux = aux_targets.OfflineTeacherTargets(ego_scores=str(path))
    with pytest.raises(TeacherFileError, match=message) as err:
        aux({"key": "a.mp4"})
    assert str(err.value).startswith(f"{path}: entry 'b.mp4'")
    # A good file loads, with the entry's logits.
    path.write_bytes(pickle.dumps({"a.mp4": [1.5, -2.0], "b.mp4": (0, 1)}))
    np.testing.assert_array_equal(teacher_scores.TeacherScores(str(path), 2)["a.mp4"], [1.5, -2.0])
    # The plain reader checks the same (one place: teacher_scores), and so does the writer.
    path.write_bytes(pickle.dumps({"a.mp4": np.zeros(2, np.float32), "b.mp4": entry}))
    with pytest.raises(TeacherFileError, match=message) as err:
        teacher_scores.TeacherScores(path, num_classes=2)
    assert str(err.value).startswith(f"{path}: entry 'b.mp4'")
    with pytest.raises(TeacherFileError, match="entry 'b.mp4'"):
        teacher_scores.write_score_pickle(tmp_path / "out.pkl", {"b.mp4": entry})


def test_memo_bomb_score_file_is_refused_naming_the_file(tmp_path):
    """441 bytes asking the C unpickler for 16 GiB of memo: refused before it allocates."""
    path = tmp_path / "ego.pkl"
    path.write_bytes(b"\x80\x02}r\x00\x00\x00\x40" + b"N" * 400 + b".")
    with pytest.raises(TeacherFileError, match=r"not a readable teacher score pickle \(memo index 1073741824") as err:
        teacher_scores.TeacherScores(str(path), 2)
    assert str(err.value).startswith(str(path))
