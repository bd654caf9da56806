"""EPIC-Kitchens-100 and EPIC-Kitchens-55 indexes from the official annotation files.

EPIC-100: `EPIC_100_train.csv` / `EPIC_100_validation.csv` (or the `.pkl` pandas pickles of the
same tables) from `epic-kitchens-100-annotations`; segment key `narration_id`; `verb_class` 0..96,
`noun_class` 0..299. Frames of a segment are
`{path_prefix}/{participant_id}/rgb_frames/{video_id}/frame_{n:010d}.jpg`.

EPIC-55: the Ego-Exo release's `EPIC_train_action_labels.pkl` / `EPIC_val_action_labels.pkl`
(the temporal-binding-network train/val split of the EPIC-55 training set; the same table layout
as `epic-kitchens-55-annotations`' `EPIC_train_action_labels.csv`), and the unlabelled test lists
`EPIC_test_s1_timestamps.csv` / `EPIC_test_s2_timestamps.csv`; segment key `uid`; `verb_class`
0..124, `noun_class` 0..351. Frames are `{path_prefix}/{video_id}/frame_{n:010d}.jpg` (one flat
folder of videos, no participant level: the layout the original `Epickitchen` loader reads).

Columns used: the key, `participant_id`, `video_id`, `start_frame`, `stop_frame`, `verb_class`,
`noun_class`; files without class columns (the test timestamps) give -1 labels. n runs over
start_frame..stop_frame (absolute, 1-based). `.pkl` files are read only when pandas is installed.
"""

from __future__ import annotations

import csv
import dataclasses
import os

from egoexo_jax import storage
from egoexo_jax.data.errors import AnnotationError
from egoexo_jax.data.frames import FrameSequence, epic_frame_sequence

NUM_VERBS = 97
NUM_NOUNS = 300
NUM_VERBS_55 = 125
NUM_NOUNS_55 = 352
# (verbs, nouns) per dataset name of the data config.
CLASS_COUNTS = {"epic100": (NUM_VERBS, NUM_NOUNS), "epic55": (NUM_VERBS_55, NUM_NOUNS_55)}
REQUIRED_COLUMNS = ("participant_id", "video_id", "start_frame", "stop_frame")
KEY_COLUMNS = ("narration_id", "uid")  # EPIC-100, EPIC-55


@dataclasses.dataclass(frozen=True)
class EpicSegment:
    """One annotated action segment.

    Attributes:
      key: narration_id (e.g. 'P01_11_0').
      participant_id, video_id: e.g. 'P01', 'P01_11'.
      start_frame, stop_frame: absolute 1-based frame numbers, inclusive.
      verb, noun: class indices, -1 when unlabelled.
    """

    key: str
    participant_id: str
    video_id: str
    start_frame: int
    stop_frame: int
    verb: int
    noun: int

    @property
    def num_frames(self) -> int:
        return self.stop_frame - self.start_frame + 1

    def frames(self, path_prefix: str, flat: bool = False) -> FrameSequence:
        """The segment's frame paths; position 0 is `start_frame`. `flat`: the EPIC-55 layout
        `{path_prefix}/{video_id}/frame_*.jpg`, else EPIC-100's `{P}/rgb_frames/{video_id}/...`."""
        if flat:
            template = storage.join(path_prefix, self.video_id).replace("%", "%%")
            return FrameSequence(template=template + "/frame_%010d.jpg", first=self.start_frame, count=self.num_frames)
        return epic_frame_sequence(path_prefix, self.participant_id, self.video_id, self.start_frame, self.stop_frame)


def _int_field(row: dict, name: str, path, line_number: int, *, default: int | None = None) -> int:
    value = row.get(name)
    if value is None or value == "":
        if default is not None:
            return default
        raise AnnotationError(path, line_number, f"missing {name}")
    try:
        return int(float(value)) if "." in str(value) else int(value)
    except ValueError:
        raise AnnotationError(path, line_number, f"{name}={value!r} is not an integer") from None


def _segment(
    row: dict, key: str, path, line_number: int, num_verbs: int = NUM_VERBS, num_nouns: int = NUM_NOUNS
) -> EpicSegment:
    start = _int_field(row, "start_frame", path, line_number)
    stop = _int_field(row, "stop_frame", path, line_number)
    if start < 0 or stop < start:
        raise AnnotationError(path, line_number, f"bad frame range {start}..{stop}")
    verb = _int_field(row, "verb_class", path, line_number, default=-1)
    noun = _int_field(row, "noun_class", path, line_number, default=-1)
    if not -1 <= verb < num_verbs:
        raise AnnotationError(path, line_number, f"verb_class {verb} outside [0, {num_verbs})")
    if not -1 <= noun < num_nouns:
        raise AnnotationError(path, line_number, f"noun_class {noun} outside [0, {num_nouns})")
    participant, video = str(row["participant_id"]).strip(), str(row["video_id"]).strip()
    if not participant or not video:
        raise AnnotationError(path, line_number, "empty participant_id or video_id")
    return EpicSegment(
        key=key, participant_id=participant, video_id=video, start_frame=start, stop_frame=stop, verb=verb, noun=noun
    )


def _row_key(row: dict, default: str) -> str:
    for column in KEY_COLUMNS:
        value = row.get(column)
        if value is not None and value != "":
            return str(value)
    return default


def read_epic_csv(
    csv_path: str | os.PathLike, *, num_verbs: int = NUM_VERBS, num_nouns: int = NUM_NOUNS
) -> list[EpicSegment]:
    """Parses an EPIC-100 or EPIC-55 annotation csv (header row, official column names); the key
    is `narration_id` or `uid`, class ids must lie below `num_verbs` / `num_nouns`.

    Raises:
      AnnotationError: missing columns, a row with the wrong number of fields, a bad number.
    """
    segments = []
    with storage.open_text(os.fspath(csv_path), encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise AnnotationError(csv_path, 1, f"missing columns {missing}")
        for i, row in enumerate(reader):
            line_number = reader.line_num
            if None in row or any(v is None for v in row.values()):
                raise AnnotationError(csv_path, line_number, f"expected {len(columns)} fields ({', '.join(columns)})")
            key = _row_key(row, f"{row['video_id']}_{i}")
            segments.append(_segment(row, key, csv_path, line_number, num_verbs, num_nouns))
    return segments


def read_epic_pickle(
    pkl_path: str | os.PathLike, *, num_verbs: int = NUM_VERBS, num_nouns: int = NUM_NOUNS
) -> list[EpicSegment]:
    """Reads an official `.pkl` (a pandas DataFrame indexed by narration_id / uid). Needs pandas."""
    try:
        import pandas as pd  # pylint: disable=g-import-not-at-top
    except ImportError:
        stem = os.fspath(pkl_path)
        csv_name = (stem[: -len(".pkl")] if stem.endswith(".pkl") else stem) + ".csv"
        raise ImportError(
            f"{pkl_path} is a pandas pickle and pandas is not installed: pip install pandas, or use a "
            f"csv of the same table ({csv_name}: EPIC-100 ships one in epic-kitchens-100-annotations; "
            f"for the EPIC-55 split pickles write it once where pandas is installed with "
            f"pandas.read_pickle(pkl).to_csv(csv)) and name it in the data config"
        ) from None
    with storage.open_read(os.fspath(pkl_path)) as f:
        frame = pd.read_pickle(f)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise AnnotationError(pkl_path, 0, f"missing columns {missing}")
    segments = []
    for row_number, (key, row) in enumerate(frame.iterrows(), start=1):
        row = {k: ("" if v is None or (isinstance(v, float) and v != v) else v) for k, v in row.to_dict().items()}
        key = _row_key(row, str(key))
        # Pickles have no lines; the row number (1-based, after the header) stands in.
        segments.append(_segment(row, key, pkl_path, row_number, num_verbs, num_nouns))
    return segments


def read_epic_annotations(path: str | os.PathLike, dataset: str = "epic100") -> list[EpicSegment]:
    """Reads `.csv` or `.pkl` annotations of `dataset` ('epic100' | 'epic55') into segments
    (file order)."""
    if dataset not in CLASS_COUNTS:
        raise ValueError(f"unknown EPIC dataset {dataset!r}; expected one of {sorted(CLASS_COUNTS)}")
    num_verbs, num_nouns = CLASS_COUNTS[dataset]
    if os.fspath(path).endswith(".pkl"):
        return read_epic_pickle(path, num_verbs=num_verbs, num_nouns=num_nouns)
    return read_epic_csv(path, num_verbs=num_verbs, num_nouns=num_nouns)
