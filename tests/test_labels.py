"""Bundled class-name files and ``egoexo_jax.labels.load_class_names``."""

import csv
import pathlib

import pytest

from egoexo_jax import labels
from egoexo_jax.labels import load_class_names

EPIC_FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "epic100"


@pytest.mark.parametrize(
    "name,count,first,last",
    [
        ("kinetics400", 400, "abseiling", "zumba"),
        ("charades_ego", 157, "Holding some clothes", "Someone is eating something"),
        ("epic100_verb", 97, "take", "unfreeze"),
        ("epic100_noun", 300, "tap", "extract:vanilla"),
    ],
)
def test_builtin_counts_ends_and_uniqueness(name, count, first, last):
    names = load_class_names(name)
    assert len(names) == count
    assert len(set(names)) == count
    assert names[0] == first and names[-1] == last
    assert all(n == n.strip() and n for n in names)


def test_kinetics_is_sorted_official_order():
    names = load_class_names("kinetics400")
    assert names == sorted(names)
    # a few fixed indices of the standard (PySlowFast / PyTorchVideo) label map
    assert names[1] == "air drumming"
    assert names[208] == "passing American football (in game)"
    assert names[308] == "skiing (not slalom or crosscountry)"
    assert names[369] == "tying knot (not on a tie)"
    assert names[398] == "yoga"


def test_charades_ids_and_descriptions():
    with_ids = load_class_names("charades_ego", with_ids=True)
    plain = load_class_names("charades_ego")
    assert with_ids[0] == "c000 Holding some clothes"
    assert with_ids[2] == "c002 Taking some clothes from somewhere"
    assert with_ids[156] == "c156 Someone is eating something"
    assert [line.split(" ", 1)[0] for line in with_ids] == [f"c{i:03d}" for i in range(157)]
    assert [line.split(" ", 1)[1] for line in with_ids] == plain
    assert not any(p.startswith("c0") or p.startswith("c1") for p in plain)


@pytest.mark.skipif(not EPIC_FIXTURES.is_dir(), reason="EPIC-100 annotation fixtures not present")
@pytest.mark.parametrize("kind", ["verb", "noun"])
def test_epic_matches_official_csv(kind):
    with open(EPIC_FIXTURES / f"EPIC_100_{kind}_classes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["id"]) for r in rows] == list(range(len(rows)))
    assert load_class_names(f"epic100_{kind}") == [r["key"] for r in rows]


def test_path_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("walking\nrunning \r\njumping\n", encoding="utf-8")
    assert load_class_names(path) == ["walking", "running", "jumping"]
    assert load_class_names(str(path)) == ["walking", "running", "jumping"]


def test_path_file_without_final_newline(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("a\nb", encoding="utf-8")
    assert load_class_names(path) == ["a", "b"]


@pytest.mark.parametrize(
    "text,line",
    [
        ("a\n\nb\n", 2),
        ("a\nb\n   \n", 3),
        ("\na\n", 1),
        ("a\nb\n\n", 3),
    ],
)
def test_blank_line_rejected_with_line_number(tmp_path, text, line):
    path = tmp_path / "classes.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"classes\.txt:{line}: blank line"):
        load_class_names(path)


def test_duplicate_and_empty_rejected(tmp_path):
    dup = tmp_path / "dup.txt"
    dup.write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dup\.txt:3: duplicate class name 'a' \(first on line 1\)"):
        load_class_names(dup)
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        load_class_names(empty)


def test_unknown_name_or_missing_path():
    with pytest.raises(FileNotFoundError, match="neither a known dataset.*kinetics400.*not found"):
        load_class_names("kinetics600")
    with pytest.raises(FileNotFoundError, match="no_such_file.txt"):
        load_class_names("/nonexistent/no_such_file.txt")


def test_with_ids_only_for_charades():
    with pytest.raises(ValueError, match="only to 'charades_ego'"):
        load_class_names("kinetics400", with_ids=True)


def test_missing_data_dir_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(labels, "DATA_DIR", tmp_path / "data")
    with pytest.raises(FileNotFoundError) as err:
        load_class_names("epic100_noun")
    assert str(tmp_path / "data" / "epic100_noun_classes.txt") in str(err.value)


def test_builtin_count_mismatch_detected(tmp_path, monkeypatch):
    (tmp_path / "kinetics400_classes.txt").write_text("a\nb\n", encoding="utf-8")
    monkeypatch.setattr(labels, "DATA_DIR", tmp_path)
    with pytest.raises(ValueError, match="2 class names, expected 400"):
        load_class_names("kinetics400")


def test_charades_bad_id_detected(tmp_path, monkeypatch):
    lines = [f"c{i:03d} action {i}" for i in range(157)]
    lines[5] = "c006 action 5"
    (tmp_path / "charades_ego_classes.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(labels, "DATA_DIR", tmp_path)
    with pytest.raises(ValueError, match=r":6: expected 'c005 <description>'"):
        load_class_names("charades_ego")
