"""Dataset indexes from the official list/annotation formats (kinetics.py, charades_ego.py,
epic_kitchens.py), including the real EPIC-100 validation csv."""

import csv
import sys

import numpy as np
import pytest

from egoexo_jax.data import charades_ego, epic_kitchens, kinetics
from egoexo_jax.data.errors import AnnotationError


def test_kinetics_list(tmp_path):
    (tmp_path / "train.csv").write_text("abseiling/a1.mp4 0\n\nzumba/b 2.mp4 399\n")
    videos = kinetics.read_kinetics_list(tmp_path / "train.csv", path_prefix="/videos")
    assert [(v.key, v.path, v.label) for v in videos] == [
        ("abseiling/a1.mp4", "/videos/abseiling/a1.mp4", 0),
        ("zumba/b 2.mp4", "/videos/zumba/b 2.mp4", 399),
    ]
    assert videos[0].video_id == "a1"


@pytest.mark.parametrize("bad_line", ["only_a_path.mp4", "x.mp4 seven", "x.mp4 400"])
def test_kinetics_malformed_row_names_file_and_line(tmp_path, bad_line):
    path = tmp_path / "val.csv"
    path.write_text(f"a.mp4 1\nb.mp4 2\n{bad_line}\n")
    with pytest.raises(AnnotationError, match=r"val\.csv:3:"):
        kinetics.read_kinetics_list(path)


FRAME_LIST = """original_vido_id video_id frame_id path labels
AB12EGO AB12EGO 1 AB12EGO/AB12EGO-000001.jpg ""
AB12EGO AB12EGO 2 AB12EGO/AB12EGO-000002.jpg "5,17"
AB12EGO AB12EGO 3 AB12EGO/AB12EGO-000003.jpg "17"
AB12EGO AB12EGO 4 AB12EGO/AB12EGO-000004.jpg "156"
CD34EGO CD34EGO 1 CD34EGO/CD34EGO-000001.jpg "0"
"""


def test_charades_frame_list_and_labels(tmp_path):
    (tmp_path / "train_1st.csv").write_text(FRAME_LIST)
    videos = charades_ego.read_frame_list(tmp_path / "train_1st.csv", path_prefix="/rgb")
    assert [v.key for v in videos] == ["AB12EGO", "CD34EGO"]
    v = videos[0]
    assert v.num_frames == 4 and v.frames[1] == "/rgb/AB12EGO/AB12EGO-000002.jpg"
    assert v.video_id == "AB12EGO"
    assert np.nonzero(v.span_labels(0, 1))[0].tolist() == [5, 17]
    assert np.nonzero(v.span_labels(2, 2))[0].tolist() == [17]
    assert np.nonzero(v.video_labels())[0].tolist() == [5, 17, 156]
    assert v.video_labels().shape == (157,) and v.video_labels().dtype == np.float32


def test_charades_malformed_rows(tmp_path):
    path = tmp_path / "test_1st.csv"
    path.write_text(FRAME_LIST + "EF56EGO EF56EGO 1 EF56EGO/EF56EGO-000001.jpg\n")
    with pytest.raises(AnnotationError, match=r"test_1st\.csv:7:.*5 fields"):
        charades_ego.read_frame_list(path)
    path.write_text(FRAME_LIST.replace('"156"', '"157"'))
    with pytest.raises(AnnotationError, match=r"test_1st\.csv:5:"):
        charades_ego.read_frame_list(path)


def test_charades_official_csv(tmp_path):
    from egoexo_jax.demo_data import media  # pylint: disable=g-import-not-at-top

    import fake_media as fm  # pylint: disable=g-import-not-at-top

    media.write_jpegs(
        [str(tmp_path / "rgb" / "XY9EGO" / f"XY9EGO-{i:06d}.jpg") for i in range(1, 49)],
        [fm.coded_frame(i) for i in range(48)],
    )
    (tmp_path / "CharadesEgo_v1_train.csv").write_text(
        "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length,"
        "egocentric,charades_video\n"
        'XY9EGO,S1,Kitchen,6,7,Yes,"a script",food,"desc","c010 0.00 0.50;c020 1.00 1.90",2.0,Yes,XY9\n'
        'XY9,S1,Kitchen,6,7,Yes,"a script",food,"desc","c010 0.00 0.50",2.0,No,XY9\n'
    )
    videos = charades_ego.read_charades_ego(
        tmp_path / "CharadesEgo_v1_train.csv", path_prefix=str(tmp_path / "rgb"), fps=24
    )
    assert [v.key for v in videos] == ["XY9EGO"]  # third-person row dropped
    v = videos[0]
    assert v.num_frames == 48
    assert np.nonzero(v.span_labels(0, 0))[0].tolist() == [10]  # t = 0
    assert np.nonzero(v.span_labels(13, 23))[0].tolist() == []  # 0.54 s .. 0.96 s
    assert np.nonzero(v.span_labels(24, 24))[0].tolist() == [20]  # t = 1.0 s


def test_epic100_validation_csv_real_file(fixtures_dir):
    segments = epic_kitchens.read_epic_annotations(fixtures_dir / "epic100" / "EPIC_100_validation.csv")
    assert len(segments) == 9668
    verbs = np.array([s.verb for s in segments])
    nouns = np.array([s.noun for s in segments])
    assert verbs.min() >= 0 and verbs.max() < epic_kitchens.NUM_VERBS == 97
    assert nouns.min() >= 0 and nouns.max() < epic_kitchens.NUM_NOUNS == 300
    assert len({s.key for s in segments}) == 9668
    first = segments[0]
    assert (
        first.key,
        first.participant_id,
        first.video_id,
        first.start_frame,
        first.stop_frame,
        first.verb,
        first.noun,
    ) == ("P01_11_0", "P01", "P01_11", 1, 113, 0, 2)
    assert first.frames("/epic")[0] == "/epic/P01/rgb_frames/P01_11/frame_0000000001.jpg"
    assert all(s.stop_frame >= s.start_frame for s in segments)
    # Cross-check rows against a plain csv.reader parse (quoted list columns with commas).
    with open(fixtures_dir / "epic100" / "EPIC_100_validation.csv", newline="") as fp:
        rows = list(csv.reader(fp))
    for i in (0, 4321, 9667):
        row = dict(zip(rows[0], rows[i + 1]))
        s = segments[i]
        assert (s.key, s.participant_id, s.video_id) == (row["narration_id"], row["participant_id"], row["video_id"])
        assert (s.start_frame, s.stop_frame, s.verb, s.noun) == tuple(
            int(row[c]) for c in ("start_frame", "stop_frame", "verb_class", "noun_class")
        )


def test_epic100_test_timestamps_have_no_labels(fixtures_dir):
    segments = epic_kitchens.read_epic_annotations(fixtures_dir / "epic100" / "EPIC_100_test_timestamps.csv")
    assert len(segments) > 0 and {s.verb for s in segments} == {-1} == {s.noun for s in segments}


def test_epic100_malformed_row_names_its_line(fixtures_dir, tmp_path):
    lines = (fixtures_dir / "epic100" / "EPIC_100_validation.csv").read_text().splitlines()[:6]
    fields = lines[4].split(",")
    fields[6] = "twelve"  # start_frame
    lines[4] = ",".join(fields)
    path = tmp_path / "EPIC_100_train.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"EPIC_100_train\.csv:5:.*start_frame"):
        epic_kitchens.read_epic_annotations(path)
    lines[4] = "P01_11_3,P01,P01_11"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"EPIC_100_train\.csv:5:"):
        epic_kitchens.read_epic_annotations(path)


def test_epic100_pickle_without_pandas_suggests_the_csv(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(ImportError, match=r"EPIC_100_train\.csv"):
        epic_kitchens.read_epic_annotations(tmp_path / "EPIC_100_train.pkl")
