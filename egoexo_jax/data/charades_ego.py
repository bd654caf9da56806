"""Charades-Ego index: frame lists from the Ego-Exo release, or the official `CharadesEgo_v1_*.csv`.

Frame lists (`train_1st.csv`, `test_1st.csv`): whitespace-separated, a header line starting with
`original_vido_id`, then one row per frame, in order:

    original_vido_id video_id frame_id path labels
    005BUEGO 005BUEGO 1 005BUEGO/005BUEGO-000001.jpg "12,107"

`labels` are the classes active at that frame (quoted, comma-separated; `""` = none). A video's
frame positions are 0-based in list order (this is also how its hand-object detections are indexed).

Official csv (`CharadesEgo_v1_train.csv`, ...): one row per video with an `id` and `actions`
(`c092 11.90 21.20;c147 0.00 12.60`: class, start s, end s); frames are the JPEGs found in
`path_prefix/{id}/` (`{id}-000001.jpg` ...; folders under a `gs://` prefix are listed concurrently);
frame i (0-based) is at time i / fps and carries the actions whose [start, end] contains that time.

Labels: 157 classes. Training clips get the union over the sampled span; evaluation uses the union
over the whole video.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import os

import numpy as np

from egoexo_jax import storage
from egoexo_jax.data.errors import AnnotationError
from egoexo_jax.data.frames import FrameSequence

NUM_CLASSES = 157
# Frame folders listed at once when they are in a bucket (each listing is one request).
_LISTING_THREADS = 32
FRAME_LIST_HEADER = ("original_vido_id", "video_id", "frame_id", "path", "labels")


@dataclasses.dataclass(frozen=True, eq=False)
class CharadesVideo:
    """One Charades-Ego video as an ordered frame sequence with per-frame labels.

    Attributes:
      key: the video id of the frame list (`original_vido_id`) or csv (`id`).
      frames: frame paths (absolute, `path_prefix` applied), position i = i-th listed frame.
      label_frames: `[M] int32` frame positions of the (position, class) label pairs.
      label_classes: `[M] int32` classes of those pairs.
    """

    key: str
    frames: FrameSequence
    label_frames: np.ndarray
    label_classes: np.ndarray

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def video_id(self) -> str:
        """Name of the hand-object detection file: text between the last '/' and the last '-' of the
        first frame's path."""
        return video_id_from_frame_path(self.frames[0]) if len(self.frames) else self.key

    def span_labels(self, first: int, last: int) -> np.ndarray:
        """`[157] float32` multi-hot union of the labels at positions first..last (inclusive)."""
        return multi_hot(span_classes(self.label_frames, self.label_classes, first, last))

    def video_labels(self) -> np.ndarray:
        """`[157] float32` multi-hot union over the whole video."""
        return multi_hot(self.label_classes)


def video_id_from_frame_path(path: str) -> str:
    name = path[path.rfind("/") + 1 :]
    dash = name.rfind("-")
    return name[:dash] if dash > 0 else os.path.splitext(name)[0]


def span_classes(label_frames: np.ndarray, label_classes: np.ndarray, first: int, last: int) -> np.ndarray:
    """Classes of the (frame, class) pairs with first <= frame <= last."""
    keep = (label_frames >= first) & (label_frames <= last)
    return label_classes[keep]


def multi_hot(classes, num_classes: int = NUM_CLASSES) -> np.ndarray:
    out = np.zeros((num_classes,), np.float32)
    out[np.asarray(classes, dtype=np.int64)] = 1.0
    return out


def _parse_label_field(text: str, path, line_number: int) -> list[int]:
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    if not text:
        return []
    try:
        classes = [int(x) for x in text.split(",")]
    except ValueError:
        raise AnnotationError(path, line_number, f"labels {text!r} are not integers") from None
    for c in classes:
        if not 0 <= c < NUM_CLASSES:
            raise AnnotationError(path, line_number, f"class {c} outside [0, {NUM_CLASSES})")
    return classes


def read_frame_list(list_path: str | os.PathLike, *, path_prefix: str = "") -> list[CharadesVideo]:
    """Parses a Charades-Ego frame list into videos (in order of first appearance).

    Raises:
      AnnotationError: missing header, a row without 5 fields, a bad label field.
    """
    rows: dict[str, tuple[list[str], list[int], list[int]]] = {}
    with storage.open_text(os.fspath(list_path), encoding="utf-8-sig") as f:
        header = f.readline().split()
        if not header or header[0] != FRAME_LIST_HEADER[0]:
            raise AnnotationError(list_path, 1, f"expected a header starting with {FRAME_LIST_HEADER[0]!r}")
        for line_number, line in enumerate(f, start=2):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 5:
                raise AnnotationError(
                    list_path, line_number, f"expected 5 fields {FRAME_LIST_HEADER}, got {len(fields)}"
                )
            key = fields[0]
            paths, label_frames, label_classes = rows.setdefault(key, ([], [], []))
            position = len(paths)
            paths.append(storage.join(path_prefix, fields[3]))
            for c in _parse_label_field(fields[4], list_path, line_number):
                label_frames.append(position)
                label_classes.append(c)
    return [
        CharadesVideo(
            key=key,
            frames=FrameSequence.from_paths(paths),
            label_frames=np.asarray(lf, np.int32),
            label_classes=np.asarray(lc, np.int32),
        )
        for key, (paths, lf, lc) in rows.items()
    ]


def _parse_actions(text: str, path, line_number: int) -> list[tuple[int, float, float]]:
    actions = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = item.split()
        if len(parts) != 3 or not parts[0].startswith("c"):
            raise AnnotationError(path, line_number, f"action {item!r} is not 'cNNN start end'")
        try:
            actions.append((int(parts[0][1:]), float(parts[1]), float(parts[2])))
        except ValueError:
            raise AnnotationError(path, line_number, f"action {item!r} is not 'cNNN start end'") from None
        if not 0 <= actions[-1][0] < NUM_CLASSES:
            raise AnnotationError(path, line_number, f"class {actions[-1][0]} outside [0, {NUM_CLASSES})")
    return actions


def read_charades_ego_csv(
    csv_path: str | os.PathLike, *, path_prefix: str, fps: float = 24.0, first_person_only: bool = True
) -> list[CharadesVideo]:
    """Builds videos from an official `CharadesEgo_v1_*.csv` and the extracted frame folders.

    Args:
      csv_path: the annotation csv (needs `id` and `actions` columns).
      path_prefix: folder holding `{id}/{id}-000001.jpg` ...
      fps: frame extraction rate (maps action times to frames).
      first_person_only: keep rows whose `egocentric` column is 'Yes' (when the column exists).

    A video whose folder is missing or empty gets its expected frame count from the `length` column
    (so reading it later fails as a missing input rather than silently vanishing from the index).
    """
    rows = []
    with storage.open_text(os.fspath(csv_path), encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "id" not in reader.fieldnames or ("actions" not in reader.fieldnames):
            raise AnnotationError(csv_path, 1, "expected columns 'id' and 'actions'")
        for row in reader:
            line_number = reader.line_num
            if None in row or any(v is None for v in row.values()):
                raise AnnotationError(csv_path, line_number, "wrong number of fields")
            if (
                first_person_only
                and "egocentric" in row
                and row["egocentric"].strip() not in ("Yes", "yes", "True", "1")
            ):
                continue
            actions = _parse_actions(row["actions"] or "", csv_path, line_number)
            rows.append((row, line_number, actions))
    folders = [storage.join(path_prefix, row["id"].strip()) for row, _, _ in rows]
    videos = []
    for (row, line_number, actions), folder, names in zip(rows, folders, _frame_names(folders)):
        key = row["id"].strip()
        if names:
            frames = FrameSequence.from_paths([storage.join(folder, n) for n in names])
        else:
            try:
                count = max(int(float(row.get("length") or 0) * fps), 1)
            except ValueError:
                raise AnnotationError(csv_path, line_number, f"length {row.get('length')!r}") from None
            frames = FrameSequence(
                template=storage.join(folder, key).replace("%", "%%") + "-%06d.jpg", first=1, count=count
            )
        times = np.arange(len(frames)) / fps
        label_frames, label_classes = [], []
        for c, start, end in actions:
            inside = np.nonzero((times >= start) & (times <= end))[0]
            label_frames.extend(inside.tolist())
            label_classes.extend([c] * len(inside))
        order = np.argsort(np.asarray(label_frames, np.int64), kind="stable")
        videos.append(
            CharadesVideo(
                key=key,
                frames=frames,
                label_frames=np.asarray(label_frames, np.int32)[order],
                label_classes=np.asarray(label_classes, np.int32)[order],
            )
        )
    return videos


def _frame_names(folders: list[str]) -> list[list[str]]:
    """Sorted `.jpg` / `.jpeg` names in each folder (`[]` for a missing one); folders in a bucket
    are listed concurrently (one listing request each, thousands of videos)."""

    def names(folder: str) -> list[str]:
        try:
            return [n for n in storage.listdir(folder) if n.lower().endswith((".jpg", ".jpeg"))]
        except (FileNotFoundError, NotADirectoryError):
            return []

    if not any(storage.is_url(f) for f in folders):
        return [names(f) for f in folders]
    with concurrent.futures.ThreadPoolExecutor(_LISTING_THREADS) as pool:
        return list(pool.map(names, folders))


def read_charades_ego(list_path: str | os.PathLike, *, path_prefix: str = "", fps: float = 24.0) -> list[CharadesVideo]:
    """Reads a frame list, or an official csv (recognised by its header), into videos."""
    with storage.open_text(os.fspath(list_path), encoding="utf-8-sig") as f:
        first = f.readline()
    if first.split() and first.split()[0] == FRAME_LIST_HEADER[0]:
        return read_frame_list(list_path, path_prefix=path_prefix)
    return read_charades_ego_csv(list_path, path_prefix=path_prefix, fps=fps)
