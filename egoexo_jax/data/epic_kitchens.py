"""EPIC-Kitchens-100 index from the official annotation files.

`EPIC_100_train.csv` / `EPIC_100_validation.csv` (or the `.pkl` pandas pickles of the same tables,
read only when pandas is installed) from `epic-kitchens-100-annotations`. Columns used:
`narration_id`, `participant_id`, `video_id`, `start_frame`, `stop_frame`, `verb_class` (0..96),
`noun_class` (0..299); files without class columns (the test timestamps) give -1 labels.

Frames of a segment are `{path_prefix}/{participant_id}/rgb_frames/{video_id}/frame_{n:010d}.jpg`
for n = start_frame..stop_frame (absolute, 1-based).
"""

from __future__ import annotations

import csv
import dataclasses
import os

from egoexo_jax.data.errors import AnnotationError
from egoexo_jax.data.video import FrameSequence, epic_frame_sequence

NUM_VERBS = 97
NUM_NOUNS = 300
REQUIRED_COLUMNS = ("participant_id", "video_id", "start_frame", "stop_frame")


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

  def frames(self, path_prefix: str) -> FrameSequence:
    """The segment's frame paths; position 0 is `start_frame`."""
    return epic_frame_sequence(path_prefix, self.participant_id, self.video_id, self.start_frame,
                               self.stop_frame)


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


def _segment(row: dict, key: str, path, line_number: int) -> EpicSegment:
  start = _int_field(row, "start_frame", path, line_number)
  stop = _int_field(row, "stop_frame", path, line_number)
  if start < 0 or stop < start:
    raise AnnotationError(path, line_number, f"bad frame range {start}..{stop}")
  verb = _int_field(row, "verb_class", path, line_number, default=-1)
  noun = _int_field(row, "noun_class", path, line_number, default=-1)
  if not -1 <= verb < NUM_VERBS:
    raise AnnotationError(path, line_number, f"verb_class {verb} outside [0, {NUM_VERBS})")
  if not -1 <= noun < NUM_NOUNS:
    raise AnnotationError(path, line_number, f"noun_class {noun} outside [0, {NUM_NOUNS})")
  participant, video = str(row["participant_id"]).strip(), str(row["video_id"]).strip()
  if not participant or not video:
    raise AnnotationError(path, line_number, "empty participant_id or video_id")
  return EpicSegment(key=key, participant_id=participant, video_id=video, start_frame=start,
                     stop_frame=stop, verb=verb, noun=noun)


def read_epic_csv(csv_path: str | os.PathLike) -> list[EpicSegment]:
  """Parses an EPIC-100 annotation csv (header row, official column names).

  Raises:
    AnnotationError: missing columns, a row with the wrong number of fields, a bad number.
  """
  segments = []
  with open(csv_path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    columns = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
      raise AnnotationError(csv_path, 1, f"missing columns {missing}")
    for i, row in enumerate(reader):
      line_number = reader.line_num
      if None in row or any(v is None for v in row.values()):
        raise AnnotationError(csv_path, line_number,
                              f"expected {len(columns)} fields ({', '.join(columns)})")
      key = row.get("narration_id") or f"{row['video_id']}_{i}"
      segments.append(_segment(row, key, csv_path, line_number))
  return segments


def read_epic_pickle(pkl_path: str | os.PathLike) -> list[EpicSegment]:
  """Reads an official `.pkl` (a pandas DataFrame indexed by narration_id). Needs pandas."""
  try:
    import pandas as pd  # pylint: disable=g-import-not-at-top
  except ImportError:
    csv_name = os.path.splitext(os.fspath(pkl_path))[0] + ".csv"
    raise ImportError(
        f"{pkl_path} is a pandas pickle and pandas is not installed; use the csv of the same table "
        f"from epic-kitchens-100-annotations instead ({csv_name})") from None
  frame = pd.read_pickle(pkl_path)
  missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
  if missing:
    raise AnnotationError(pkl_path, 0, f"missing columns {missing}")
  segments = []
  for row_number, (key, row) in enumerate(frame.iterrows(), start=1):
    row = {k: ("" if v is None or (isinstance(v, float) and v != v) else v)
           for k, v in row.to_dict().items()}
    if "narration_id" in row and row["narration_id"] != "":
      key = row["narration_id"]
    # Pickles have no lines; the row number (1-based, after the header) stands in.
    segments.append(_segment(row, str(key), pkl_path, row_number))
  return segments


def read_epic_annotations(path: str | os.PathLike) -> list[EpicSegment]:
  """Reads `.csv` or `.pkl` annotations into segments (file order)."""
  if os.fspath(path).endswith(".pkl"):
    return read_epic_pickle(path)
  return read_epic_csv(path)
